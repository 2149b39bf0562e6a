//! Firehose through the real binary, with the official AWS SDK for Rust:
//! every operation and its main errors, delivery of objects to the
//! embedded object store's layout (`<data-dir>/objects/<bucket>/`), and
//! durability of acknowledged records across kill -9.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_firehose::Client;
use aws_sdk_firehose::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, DeliveryStreamEncryptionConfigurationInput,
    DeliveryStreamStatus, ExtendedS3DestinationConfiguration, ExtendedS3DestinationUpdate,
    HttpEndpointConfiguration, HttpEndpointDestinationConfiguration, KeyType, Record,
    S3DestinationConfiguration, Tag,
};

use crate::support::*;

pub(crate) fn firehose(url: &str) -> Client {
    firehose_as(url, "AKIDTEST", "secret")
}

pub(crate) fn firehose_as(url: &str, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

pub(crate) const ROLE: &str = "arn:aws:iam::000000000000:role/firehose";

pub(crate) fn extended(
    bucket: &str,
    interval: i32,
) -> aws_sdk_firehose::types::builders::ExtendedS3DestinationConfigurationBuilder {
    ExtendedS3DestinationConfiguration::builder()
        .role_arn(ROLE)
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(interval)
                .build(),
        )
}

pub(crate) fn record(data: &[u8]) -> Record {
    Record::builder()
        .data(Blob::new(data.to_vec()))
        .build()
        .unwrap()
}

/// Every object of a bucket directory, by key, gunzipped where `.gz`.
pub(crate) fn objects(bucket: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
                continue;
            }
            let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            // object_store stages writes as `<key>#<n>` before renaming.
            if key.contains('#') {
                continue;
            }
            let mut data = std::fs::read(&p).unwrap();
            if key.ends_with(".gz") {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&data[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                data = plain;
            } else if key.ends_with(".snappy") {
                let mut plain = Vec::new();
                snap::read::FrameDecoder::new(&data[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                data = plain;
            }
            out.push((key, data));
        }
    }
    let mut out = Vec::new();
    walk(bucket, bucket, &mut out);
    out.sort();
    out
}

pub(crate) async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn bucket_dir(srv: &TestServer, name: &str) -> PathBuf {
    let p = srv.data_dir().join("objects").join(name);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[tokio::test]
async fn operations_and_their_errors() {
    let srv = TestServer::start();
    let c = firehose(&srv.url());
    let out = c
        .create_delivery_stream()
        .delivery_stream_name("ops")
        .extended_s3_destination_configuration(extended("bkt", 60).build().unwrap())
        .tags(Tag::builder().key("team").value("data").build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.delivery_stream_arn(),
        Some("arn:aws:firehose:us-east-1:000000000000:deliverystream/ops")
    );
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("ops")
        .extended_s3_destination_configuration(extended("bkt", 60).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    // Push destinations take https URLs only, unless the server allows
    // http (`--firehose-allow-http-destinations`, off here).
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("http")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url("http://127.0.0.1:9/")
                        .build()
                        .unwrap(),
                )
                .s3_configuration(
                    S3DestinationConfiguration::builder()
                        .role_arn(ROLE)
                        .bucket_arn("arn:aws:s3:::bkt")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(message(&e).contains("https"), "{}", message(&e));
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("backup")
        .extended_s3_destination_configuration(
            extended("bkt", 60)
                .s3_backup_mode(aws_sdk_firehose::types::S3BackupMode::Enabled)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Expressions in Prefix need an ErrorOutputPrefix.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("expr")
        .extended_s3_destination_configuration(
            extended("bkt", 60)
                .prefix("!{timestamp:yyyy}/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");

    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    assert_eq!(d.delivery_stream_status(), &DeliveryStreamStatus::Active);
    assert_eq!(d.version_id(), "1");
    assert!(d.create_timestamp().is_some());
    assert!(!d.has_more_destinations());
    let dest = &d.destinations()[0];
    assert_eq!(dest.destination_id(), "destinationId-000000000001");
    let ext = dest.extended_s3_destination_description().unwrap();
    assert_eq!(ext.compression_format(), &CompressionFormat::Uncompressed);
    assert_eq!(ext.buffering_hints().unwrap().size_in_mbs(), Some(1));
    assert!(
        ext.encryption_configuration()
            .unwrap()
            .no_encryption_config()
            .is_some()
    );
    assert_eq!(
        dest.s3_destination_description().unwrap().bucket_arn(),
        "arn:aws:s3:::bkt"
    );
    let e = c
        .describe_delivery_stream()
        .delivery_stream_name("missing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");

    #[allow(deprecated)]
    c.create_delivery_stream()
        .delivery_stream_name("second")
        .s3_destination_configuration(
            S3DestinationConfiguration::builder()
                .role_arn(ROLE)
                .bucket_arn("arn:aws:s3:::bkt")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let l = c.list_delivery_streams().limit(1).send().await.unwrap();
    assert_eq!(l.delivery_stream_names(), ["ops"]);
    assert!(l.has_more_delivery_streams());
    let l = c
        .list_delivery_streams()
        .exclusive_start_delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    assert_eq!(l.delivery_stream_names(), ["second"]);
    assert!(!l.has_more_delivery_streams());

    // UpdateDestination: optimistic on the version id.
    let update = || {
        c.update_destination()
            .delivery_stream_name("ops")
            .destination_id("destinationId-000000000001")
            .extended_s3_destination_update(
                ExtendedS3DestinationUpdate::builder()
                    .compression_format(CompressionFormat::Gzip)
                    .build(),
            )
    };
    let e = update()
        .current_delivery_stream_version_id("7")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ConcurrentModificationException");
    update()
        .current_delivery_stream_version_id("1")
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    assert_eq!(d.version_id(), "2");
    let ext = d.destinations()[0]
        .extended_s3_destination_description()
        .unwrap();
    assert_eq!(ext.compression_format(), &CompressionFormat::Gzip);
    assert_eq!(
        ext.buffering_hints().unwrap().interval_in_seconds(),
        Some(60),
        "merged, not replaced"
    );

    // Puts.
    let p = c
        .put_record()
        .delivery_stream_name("ops")
        .record(record(b"one"))
        .send()
        .await
        .unwrap();
    assert!(p.record_id().len() > 100);
    assert_eq!(p.encrypted(), Some(false));
    let b = c
        .put_record_batch()
        .delivery_stream_name("ops")
        .set_records(Some(
            (0..500)
                .map(|i| record(format!("r{i}").as_bytes()))
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(b.failed_put_count(), 0);
    assert_eq!(b.request_responses().len(), 500);
    let ids: HashSet<&str> = b
        .request_responses()
        .iter()
        .filter_map(|r| r.record_id())
        .collect();
    assert_eq!(ids.len(), 500);
    let e = c
        .put_record_batch()
        .delivery_stream_name("ops")
        .set_records(Some((0..501).map(|_| record(b"x")).collect()))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            code(&e).as_str(),
            "ValidationException" | "InvalidArgumentException"
        ),
        "{}",
        code(&e)
    );
    let big = vec![b'x'; 1_000_000];
    let e = c
        .put_record_batch()
        .delivery_stream_name("ops")
        .set_records(Some((0..5).map(|_| record(&big)).collect()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .put_record()
        .delivery_stream_name("missing")
        .record(record(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");

    // Tags.
    c.tag_delivery_stream()
        .delivery_stream_name("ops")
        .tags(Tag::builder().key("env").value("test").build().unwrap())
        .send()
        .await
        .unwrap();
    let t = c
        .list_tags_for_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = t.tags().iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["env", "team"]);
    assert!(!t.has_more_tags());
    let e = c
        .tag_delivery_stream()
        .delivery_stream_name("ops")
        .set_tags(Some(
            (0..49)
                .map(|i| Tag::builder().key(format!("k{i}")).build().unwrap())
                .collect(),
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    c.untag_delivery_stream()
        .delivery_stream_name("ops")
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let t = c
        .list_tags_for_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    assert_eq!(t.tags().len(), 1);

    // Encryption.
    c.start_delivery_stream_encryption()
        .delivery_stream_name("ops")
        .delivery_stream_encryption_configuration_input(
            DeliveryStreamEncryptionConfigurationInput::builder()
                .key_type(KeyType::AwsOwnedCmk)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let enc = d
        .delivery_stream_description()
        .unwrap()
        .delivery_stream_encryption_configuration()
        .unwrap();
    assert_eq!(enc.status().map(|s| s.as_str()), Some("ENABLED"));
    let p = c
        .put_record()
        .delivery_stream_name("ops")
        .record(record(b"secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(p.encrypted(), Some(true));
    let e = c
        .start_delivery_stream_encryption()
        .delivery_stream_name("ops")
        .delivery_stream_encryption_configuration_input(
            DeliveryStreamEncryptionConfigurationInput::builder()
                .key_type(KeyType::CustomerManagedCmk)
                .key_arn("arn:aws:kms:us-east-1:000000000000:key/no-such-key")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidKMSResourceException");
    c.stop_delivery_stream_encryption()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let enc = d
        .delivery_stream_description()
        .unwrap()
        .delivery_stream_encryption_configuration()
        .unwrap();
    assert_eq!(enc.status().map(|s| s.as_str()), Some("DISABLED"));

    c.delete_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap();
    let e = c
        .describe_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = c
        .delete_delivery_stream()
        .delivery_stream_name("ops")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

#[tokio::test]
async fn statuses_follow_the_configured_delays() {
    let srv = TestServer::start_with(&[
        "--firehose-create-delay-ms",
        "400",
        "--firehose-delete-delay-ms",
        "400",
    ]);
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("slow")
        .extended_s3_destination_configuration(extended("bkt", 60).build().unwrap())
        .send()
        .await
        .unwrap();
    let status = || async {
        c.describe_delivery_stream()
            .delivery_stream_name("slow")
            .send()
            .await
            .map(|d| {
                d.delivery_stream_description()
                    .unwrap()
                    .delivery_stream_status()
                    .clone()
            })
    };
    assert_eq!(status().await.unwrap(), DeliveryStreamStatus::Creating);
    let e = c
        .delete_delivery_stream()
        .delivery_stream_name("slow")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status().await.unwrap(), DeliveryStreamStatus::Active);
    c.delete_delivery_stream()
        .delivery_stream_name("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(status().await.unwrap(), DeliveryStreamStatus::Deleting);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(status().await.is_err());
}

#[tokio::test]
async fn batches_become_objects_with_the_expected_keys() {
    let srv = TestServer::start();
    let bucket = bucket_dir(&srv, "delivery");
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("gz")
        .extended_s3_destination_configuration(
            extended("delivery", 1)
                .compression_format(CompressionFormat::Gzip)
                .prefix("year=!{timestamp:yyyy}/month=!{timestamp:MM}/")
                .error_output_prefix("errors/!{firehose:error-output-type}/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    #[allow(deprecated)]
    c.create_delivery_stream()
        .delivery_stream_name("plain")
        .s3_destination_configuration(
            S3DestinationConfiguration::builder()
                .role_arn(ROLE)
                .bucket_arn("arn:aws:s3:::delivery")
                .prefix("raw/")
                .buffering_hints(
                    BufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(1)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.create_delivery_stream()
        .delivery_stream_name("sn")
        .extended_s3_destination_configuration(
            extended("delivery", 1)
                .compression_format(CompressionFormat::Snappy)
                .prefix("snappy/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let records: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
        .collect();
    for name in ["gz", "plain", "sn"] {
        c.put_record_batch()
            .delivery_stream_name(name)
            .set_records(Some(records.iter().map(|r| record(r)).collect()))
            .send()
            .await
            .unwrap();
    }
    wait_until("three objects", Duration::from_secs(20), || {
        objects(&bucket).len() == 3
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The year of now (UTC), by the same civil-date arithmetic the server uses.
    let year = ripstream_firehose::prefix::UtcTime::from_ms(now as i64 * 1000);
    let expected: Vec<u8> = records.concat();
    // Firehose's CloudWatch metrics, per delivery stream (counted once the
    // object is synced, a moment after its file appears).
    let wants = [
        "ripstream_firehose_incoming_records_total{delivery_stream=\"gz\"} 50",
        "ripstream_firehose_delivery_to_s3_records_total{delivery_stream=\"plain\"} 50",
        "ripstream_firehose_delivery_to_s3_success_total{delivery_stream=\"gz\"} 1",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = raw(&srv.addr, false, "GET", "/metrics", &[], Vec::new()).await;
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        match wants.iter().find(|w| !text.contains(*w)) {
            None => break,
            Some(w) if Instant::now() > deadline => panic!("{w} missing from:\n{text}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    for (key, data) in objects(&bucket) {
        assert_eq!(data, expected, "{key}: records concatenated raw, in order");
        if let Some(rest) = key.strip_prefix("snappy/") {
            assert!(
                rest.ends_with(".snappy") && rest.contains("/sn-1-"),
                "{key}"
            );
        } else if key.starts_with("raw/") {
            // raw/YYYY/MM/dd/HH/plain-1-yyyy-MM-dd-HH-mm-ss-<uuid>
            let parts: Vec<&str> = key.split('/').collect();
            assert_eq!(parts.len(), 6, "{key}");
            assert_eq!(parts[1], format!("{:04}", year.year));
            assert!(
                parts[5].starts_with(&format!("plain-1-{:04}-", year.year)),
                "{key}"
            );
            assert_eq!(
                parts[5].len(),
                "plain-1-2026-12-03-17-04-05-".len() + 36,
                "{key}"
            );
        } else {
            let want = format!("year={:04}/month={:02}/gz-1-", year.year, year.month);
            assert!(key.starts_with(&want), "{key}");
            assert!(key.ends_with(".gz"), "{key}");
        }
    }
}

#[tokio::test]
async fn undelivered_records_survive_a_restart_beside_data_streams() {
    let mut srv = TestServer::start();
    let c = firehose(&srv.url());
    // A Kinesis stream too, so Data Streams' start-up reconciliation runs
    // over a log holding both services' partitions.
    create_stream(&srv.client(), "ks", 1).await;
    c.create_delivery_stream()
        .delivery_stream_name("wait")
        .extended_s3_destination_configuration(extended("notyet", 1).build().unwrap())
        .send()
        .await
        .unwrap();
    c.put_record_batch()
        .delivery_stream_name("wait")
        .records(record(b"kept "))
        .records(record(b"across restarts"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        srv.log().contains("S3.NoSuchBucket"),
        "the missing bucket is logged"
    );
    srv.terminate();
    srv.restart();
    srv.kill9();
    srv.restart();
    let bucket = bucket_dir(&srv, "notyet");
    wait_until("the held records", Duration::from_secs(30), || {
        !objects(&bucket).is_empty()
    })
    .await;
    assert_eq!(objects(&bucket)[0].1, b"kept across restarts");
    assert!(
        !srv.log().contains("removing log partition"),
        "{}",
        srv.log()
    );
}

/// Record data of every acknowledged put.
type Acked = Arc<Mutex<Vec<Vec<u8>>>>;

async fn produce_until_killed(url: String, acked: Acked, producer: usize, round: usize) {
    let c = firehose(&url);
    for n in 0.. {
        let datas: Vec<Vec<u8>> = (0..25)
            .map(|i| format!("<r{round}-p{producer}-{n}-{i}>").into_bytes())
            .collect();
        match c
            .put_record_batch()
            .delivery_stream_name("crash")
            .set_records(Some(datas.iter().map(|d| record(d)).collect()))
            .send()
            .await
        {
            Ok(out) => {
                let mut a = acked.lock().unwrap();
                for (r, d) in out.request_responses().iter().zip(datas) {
                    if r.record_id().is_some() && r.error_code().is_none() {
                        a.push(d);
                    }
                }
            }
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_are_delivered_after_kill_9() {
    let mut srv = TestServer::start();
    let bucket = bucket_dir(&srv, "crash");
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("crash")
        .extended_s3_destination_configuration(
            extended("crash", 1)
                .compression_format(CompressionFormat::Gzip)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let acked: Acked = Arc::default();
    for round in 0..2 {
        let producers: Vec<_> = (0..4)
            .map(|p| tokio::spawn(produce_until_killed(srv.url(), acked.clone(), p, round)))
            .collect();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        srv.kill9();
        for p in producers {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
        srv.restart();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} records acknowledged",
        acked.len()
    );
    let missing = || {
        let mut delivered = Vec::new();
        for (_, data) in objects(&bucket) {
            delivered.extend(data);
        }
        let text = String::from_utf8_lossy(&delivered).into_owned();
        let seen: HashSet<&str> = text.split_inclusive('>').collect();
        acked
            .iter()
            .filter(|d| !seen.contains(std::str::from_utf8(d).unwrap()))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = missing();
        if m == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{m} of {} acknowledged records never delivered",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "producer"
access_key_id = "AKIDPRODUCER00000001"
secret_access_key = "producer-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": ["firehose:PutRecord", "firehose:PutRecordBatch"], "Resource": "arn:aws:firehose:us-east-1:000000000000:deliverystream/allowed"},
  {"Effect": "Allow", "Action": "firehose:ListDeliveryStreams", "Resource": "*"}
]}'''

[[principal]]
name = "creator"
access_key_id = "AKIDCREATOR000000001"
secret_access_key = "creator-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": ["firehose:CreateDeliveryStream", "firehose:UpdateDestination", "firehose:DescribeDeliveryStream"], "Resource": "*"},
  {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::mine/*"}
]}'''
"#;

/// Firehose writes for whoever configured the stream, so configuring one
/// needs the right to write its bucket: otherwise any caller could have the
/// server write into any bucket.
#[tokio::test]
async fn a_stream_only_writes_where_its_creator_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    let creator = firehose_as(&srv.url(), "AKIDCREATOR000000001", "creator-secret");
    let e = creator
        .create_delivery_stream()
        .delivery_stream_name("into-theirs")
        .extended_s3_destination_configuration(extended("theirs", 60).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let message = e
        .as_service_error()
        .and_then(|s| aws_sdk_firehose::error::ProvideErrorMetadata::message(s).map(String::from));
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("s3:PutObject")),
        "{message:?}"
    );
    creator
        .create_delivery_stream()
        .delivery_stream_name("into-mine")
        .extended_s3_destination_configuration(extended("mine", 60).build().unwrap())
        .send()
        .await
        .unwrap();
    // Nor can an update point it elsewhere.
    let d = creator
        .describe_delivery_stream()
        .delivery_stream_name("into-mine")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    let e = creator
        .update_destination()
        .delivery_stream_name("into-mine")
        .current_delivery_stream_version_id(d.version_id())
        .destination_id(d.destinations()[0].destination_id())
        .extended_s3_destination_update(
            aws_sdk_firehose::types::ExtendedS3DestinationUpdate::builder()
                .bucket_arn("arn:aws:s3:::theirs")
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let d = creator
        .describe_delivery_stream()
        .delivery_stream_name("into-mine")
        .send()
        .await
        .unwrap();
    let dest = &d.delivery_stream_description().unwrap().destinations()[0];
    assert_eq!(
        dest.extended_s3_destination_description()
            .unwrap()
            .bucket_arn(),
        "arn:aws:s3:::mine"
    );
}

/// A stream sealing its objects under a KMS key keeps doing so through an
/// update that does not name the key: whoever points it elsewhere has it
/// use the key there, so they need kms:GenerateDataKey on it too.
#[tokio::test]
async fn an_update_needs_the_key_the_stream_keeps_sealing_with() {
    use aws_sdk_firehose::types::{
        EncryptionConfiguration, ExtendedS3DestinationUpdate, KmsEncryptionConfig,
        NoEncryptionConfig,
    };
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    std::fs::write(
        &keyring,
        "[[key]]\nid = \"lake-key\"\naliases = [\"alias/lake\"]\nmaterial = \"BgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY=\"\n",
    )
    .unwrap();
    let creds = dir.path().join("credentials.toml");
    std::fs::write(
        &creds,
        r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "updater"
access_key_id = "AKIDUPDATER000000001"
secret_access_key = "updater-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": ["firehose:*", "s3:PutObject"], "Resource": "*"}
]}'''
"#,
    )
    .unwrap();
    let srv = TestServer::start_with(&[
        "--keyring",
        keyring.to_str().unwrap(),
        "--credentials",
        creds.to_str().unwrap(),
    ]);
    let admin = firehose_as(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    let updater = firehose_as(&srv.url(), "AKIDUPDATER000000001", "updater-secret");
    let sealed = EncryptionConfiguration::builder()
        .kms_encryption_config(
            KmsEncryptionConfig::builder()
                .awskms_key_arn("arn:aws:kms:us-east-1:000000000000:alias/lake")
                .build()
                .unwrap(),
        )
        .build();
    // Naming the key needs the key, at create as at update.
    let e = updater
        .create_delivery_stream()
        .delivery_stream_name("theirs")
        .extended_s3_destination_configuration(
            extended("mine", 60)
                .encryption_configuration(sealed.clone())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    admin
        .create_delivery_stream()
        .delivery_stream_name("sealed")
        .extended_s3_destination_configuration(
            extended("mine", 60)
                .encryption_configuration(sealed)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let version = || async {
        let d = admin
            .describe_delivery_stream()
            .delivery_stream_name("sealed")
            .send()
            .await
            .unwrap();
        d.delivery_stream_description()
            .unwrap()
            .version_id()
            .to_string()
    };
    let update = |v: String, u: ExtendedS3DestinationUpdate| {
        updater
            .update_destination()
            .delivery_stream_name("sealed")
            .current_delivery_stream_version_id(v)
            .destination_id("destinationId-000000000001")
            .extended_s3_destination_update(u)
            .send()
    };
    let elsewhere = ExtendedS3DestinationUpdate::builder()
        .bucket_arn("arn:aws:s3:::elsewhere")
        .build();
    let e = update(version().await, elsewhere).await.unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let message = e
        .as_service_error()
        .and_then(|s| aws_sdk_firehose::error::ProvideErrorMetadata::message(s).map(String::from));
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("kms:GenerateDataKey") && m.contains("key/lake-key")),
        "{message:?}"
    );
    // Once the update stops the sealing, the key is not the updater's to need.
    let plain = ExtendedS3DestinationUpdate::builder()
        .bucket_arn("arn:aws:s3:::elsewhere")
        .encryption_configuration(
            EncryptionConfiguration::builder()
                .no_encryption_config(NoEncryptionConfig::NoEncryption)
                .build(),
        )
        .build();
    update(version().await, plain).await.unwrap();
    let d = admin
        .describe_delivery_stream()
        .delivery_stream_name("sealed")
        .send()
        .await
        .unwrap();
    let dest = d.delivery_stream_description().unwrap().destinations()[0]
        .extended_s3_destination_description()
        .unwrap();
    assert_eq!(dest.bucket_arn(), "arn:aws:s3:::elsewhere");
    assert!(
        dest.encryption_configuration()
            .and_then(|e| e.kms_encryption_config())
            .is_none()
    );
}

#[tokio::test]
async fn policies_apply_to_delivery_stream_arns_before_acting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    let admin = firehose_as(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    let producer = firehose_as(&srv.url(), "AKIDPRODUCER00000001", "producer-secret");
    for name in ["allowed", "other"] {
        admin
            .create_delivery_stream()
            .delivery_stream_name(name)
            .extended_s3_destination_configuration(extended("bkt", 60).build().unwrap())
            .send()
            .await
            .unwrap();
    }
    producer
        .put_record()
        .delivery_stream_name("allowed")
        .record(record(b"ok"))
        .send()
        .await
        .unwrap();
    let e = producer
        .put_record()
        .delivery_stream_name("other")
        .record(record(b"no"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    // Refused before acting: nothing is created.
    let e = producer
        .create_delivery_stream()
        .delivery_stream_name("sneaky")
        .extended_s3_destination_configuration(extended("bkt", 60).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = producer
        .delete_delivery_stream()
        .delivery_stream_name("allowed")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let names = producer.list_delivery_streams().send().await.unwrap();
    assert_eq!(names.delivery_stream_names(), ["allowed", "other"]);
}

/// The whole path a Firehose user sees: a bucket made with S3 CreateBucket,
/// records put to a GZIP delivery stream, the object listed and read back
/// through the S3 API byte for byte, with the ETag S3 gives a single put.
#[tokio::test]
async fn deliveries_are_read_back_through_the_s3_api() {
    use md5::{Digest, Md5};
    let srv = TestServer::start();
    let s3 = crate::s3::s3(&srv.url());
    s3.create_bucket().bucket("lake").send().await.unwrap();
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("to-lake")
        .extended_s3_destination_configuration(
            extended("lake", 1)
                .compression_format(CompressionFormat::Gzip)
                .prefix("events/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let records: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("{{\"event\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 37)).into_bytes())
        .collect();
    for chunk in records.chunks(100) {
        let out = c
            .put_record_batch()
            .delivery_stream_name("to-lake")
            .set_records(Some(chunk.iter().map(|r| record(r)).collect()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_put_count(), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let out = s3
            .list_objects_v2()
            .bucket("lake")
            .prefix("events/")
            .send()
            .await
            .unwrap();
        let total: usize = out.contents().len();
        if total > 0 {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered to s3://lake/events/"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut delivered = Vec::new();
    for o in listed.contents() {
        let key = o.key().unwrap();
        // A prefix without a timestamp gets AWS's default one appended:
        // events/YYYY/MM/dd/HH/to-lake-1-<yyyy-MM-dd-HH-mm-ss>-<uuid>.gz
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 6, "{key}");
        assert_eq!(parts[0], "events", "{key}");
        assert!(
            parts[1].len() == 4 && parts[2..5].iter().all(|p| p.len() == 2),
            "{key}"
        );
        assert!(
            parts[5].starts_with("to-lake-1-") && parts[5].ends_with(".gz"),
            "{key}"
        );
        let got = s3
            .get_object()
            .bucket("lake")
            .key(key)
            .send()
            .await
            .unwrap();
        let etag = got.e_tag().unwrap().to_string();
        let gz = got.body.collect().await.unwrap().into_bytes().to_vec();
        assert_eq!(
            etag,
            format!("\"{}\"", hex::encode(Md5::digest(&gz))),
            "{key}"
        );
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        delivered.push(plain);
    }
    // One buffer, or several if the interval ended between the two batches:
    // in order either way, every record once.
    assert_eq!(delivered.concat(), records.concat());
}

pub(crate) fn processor(
    ty: aws_sdk_firehose::types::ProcessorType,
    params: &[(aws_sdk_firehose::types::ProcessorParameterName, &str)],
) -> aws_sdk_firehose::types::Processor {
    let mut p = aws_sdk_firehose::types::Processor::builder().r#type(ty);
    for (n, v) in params {
        p = p.parameters(
            aws_sdk_firehose::types::ProcessorParameter::builder()
                .parameter_name(n.clone())
                .parameter_value(*v)
                .build()
                .unwrap(),
        );
    }
    p.build().unwrap()
}

#[tokio::test]
async fn records_are_deaggregated_and_delimited_before_delivery() {
    use aws_sdk_firehose::types::{
        ProcessingConfiguration, ProcessorParameterName as N, ProcessorType as T,
    };
    let srv = TestServer::start();
    let bucket = bucket_dir(&srv, "proc");
    let c = firehose(&srv.url());
    // Listed delimiter first: AWS appends it after de-aggregating anyway.
    let json_cfg = ProcessingConfiguration::builder()
        .enabled(true)
        .processors(processor(T::AppendDelimiterToRecord, &[]))
        .processors(processor(
            T::RecordDeAggregation,
            &[(N::SubRecordType, "JSON")],
        ))
        .build();
    c.create_delivery_stream()
        .delivery_stream_name("json")
        .extended_s3_destination_configuration(
            extended("proc", 1)
                .prefix("json/")
                .compression_format(CompressionFormat::Gzip)
                .processing_configuration(json_cfg.clone())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // "|" is fA== in base64, as AWS takes the DELIMITED delimiter.
    c.create_delivery_stream()
        .delivery_stream_name("delim")
        .extended_s3_destination_configuration(
            extended("proc", 1)
                .prefix("delim/")
                .processing_configuration(
                    ProcessingConfiguration::builder()
                        .enabled(true)
                        .processors(processor(
                            T::RecordDeAggregation,
                            &[(N::SubRecordType, "DELIMITED"), (N::Delimiter, "fA==")],
                        ))
                        .processors(processor(
                            T::AppendDelimiterToRecord,
                            &[(N::Delimiter, "\\n")],
                        ))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // Described as given.
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("json")
        .send()
        .await
        .unwrap();
    let dest = &d.delivery_stream_description.unwrap().destinations[0];
    assert_eq!(
        dest.extended_s3_destination_description()
            .unwrap()
            .processing_configuration(),
        Some(&json_cfg)
    );
    // Refused: an unknown parameter for the type, a bad base64 delimiter,
    // and the processors not supported yet.
    for (name, cfg, want) in [
        (
            "p1",
            ProcessingConfiguration::builder()
                .enabled(true)
                .processors(processor(
                    T::AppendDelimiterToRecord,
                    &[(N::SubRecordType, "JSON")],
                ))
                .build(),
            "not valid for processor type",
        ),
        (
            "p2",
            ProcessingConfiguration::builder()
                .enabled(true)
                .processors(processor(
                    T::RecordDeAggregation,
                    &[(N::SubRecordType, "DELIMITED"), (N::Delimiter, "|*|")],
                ))
                .build(),
            "base64",
        ),
        (
            "p3",
            ProcessingConfiguration::builder()
                .enabled(true)
                .processors(processor(
                    T::CloudWatchLogProcessing,
                    &[(N::DataMessageExtraction, "true")],
                ))
                .build(),
            "needs a Decompression",
        ),
    ] {
        let e = c
            .create_delivery_stream()
            .delivery_stream_name(name)
            .extended_s3_destination_configuration(
                extended("proc", 1)
                    .processing_configuration(cfg)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException", "{name}");
        assert!(message(&e).contains(want), "{name}: {}", message(&e));
    }
    c.put_record_batch()
        .delivery_stream_name("json")
        .records(record(b"{\"a\":1}{\"a\":2}\n{\"b\":{\"c\":\"}{\"}}"))
        .records(record(b"{\"a\":3}"))
        .send()
        .await
        .unwrap();
    c.put_record_batch()
        .delivery_stream_name("delim")
        .records(record(b"x|y||z"))
        .records(record(b"w"))
        .send()
        .await
        .unwrap();
    wait_until("two objects", Duration::from_secs(20), || {
        objects(&bucket).len() == 2
    })
    .await;
    let got = objects(&bucket);
    assert!(got[0].0.starts_with("delim/"), "{}", got[0].0);
    assert_eq!(got[0].1, b"x\ny\nz\nw\n");
    assert!(got[1].0.starts_with("json/") && got[1].0.ends_with(".gz"));
    assert_eq!(
        got[1].1,
        b"{\"a\":1}\n{\"a\":2}\n{\"b\":{\"c\":\"}{\"}}\n{\"a\":3}\n"
    );
}

/// A transformation function as Firehose's data-transformation format
/// has it: upper-cases records, drops those saying "drop", fails those
/// saying "fail", and leaves out those saying "skip".
pub(crate) const TRANSFORM_PY: &str = r#"
import base64, json, sys
req = json.load(sys.stdin)
assert req["deliveryStreamArn"].endswith(":deliverystream/fn"), req
assert req["region"] == "us-east-1" and req["invocationId"]
out = []
for r in req["records"]:
    assert isinstance(r["approximateArrivalTimestamp"], int)
    d = base64.b64decode(r["data"]).decode()
    if d == "skip":
        continue
    res = {"drop": "Dropped", "fail": "ProcessingFailed"}.get(d, "Ok")
    out.append({"recordId": r["recordId"], "result": res,
                "data": base64.b64encode(d.upper().encode()).decode()})
json.dump({"records": out}, sys.stdout)
"#;

#[tokio::test]
async fn a_command_function_transforms_drops_and_fails_records() {
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
            "[functions.upper]\ncommand = [\"python3\", {:?}]\n[functions.broken]\ncommand = [\"false\"]\n",
            script.to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let bucket = bucket_dir(&srv, "fnout");
    let c = firehose(&srv.url());
    let lambda = |f: &str| {
        ProcessingConfiguration::builder()
            .enabled(true)
            .processors(processor(T::AppendDelimiterToRecord, &[]))
            .processors(processor(
                T::Lambda,
                &[
                    (
                        N::LambdaArn,
                        &format!("arn:aws:lambda:us-east-1:000000000000:function:{f}:$LATEST"),
                    ),
                    (N::LambdaNumberOfRetries, "1"),
                ],
            ))
            .build()
    };
    // An unknown function is refused, naming it.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nofn")
        .extended_s3_destination_configuration(
            extended("fnout", 1)
                .processing_configuration(lambda("missing"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(message(&e).contains("missing"), "{}", message(&e));
    c.create_delivery_stream()
        .delivery_stream_name("fn")
        .extended_s3_destination_configuration(
            extended("fnout", 1)
                .prefix("ok/")
                .processing_configuration(lambda("upper"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.create_delivery_stream()
        .delivery_stream_name("broken")
        .extended_s3_destination_configuration(
            extended("fnout", 1)
                .prefix("b/")
                .error_output_prefix("errs/!{firehose:error-output-type}/")
                .processing_configuration(lambda("broken"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.put_record_batch()
        .delivery_stream_name("fn")
        .set_records(Some(
            ["a", "drop", "fail", "b", "skip"]
                .iter()
                .map(|r| record(r.as_bytes()))
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    c.put_record()
        .delivery_stream_name("broken")
        .record(record(b"x"))
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while objects(&bucket).len() < 3 {
        if Instant::now() > deadline {
            let keys: Vec<String> = objects(&bucket).into_iter().map(|(k, _)| k).collect();
            panic!(
                "timed out waiting for three objects: {keys:?}\n{}",
                srv.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last object may trail the others by a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = objects(&bucket);
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    // errs/processing-failed/broken-..., ok/YYYY/.../fn-..., and (no
    // ErrorOutputPrefix: under Prefix, as AWS's semantic rules say)
    // ok/processing-failed/YYYY/MM/dd/HH/fn-...
    assert!(
        keys[0].starts_with("errs/processing-failed/broken-1-"),
        "{keys:?}"
    );
    assert!(
        keys[1].starts_with("ok/") && keys[1].contains("/fn-1-"),
        "{keys:?}"
    );
    assert_eq!(
        got[1].1, b"A\nB\n",
        "only the Ok records, transformed, delimited after"
    );
    assert!(keys[2].starts_with("ok/processing-failed/"), "{keys:?}");
    assert_eq!(keys[2].split('/').count(), 7, "{keys:?}");
    let lines = |data: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8(data.to_vec())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let failed = lines(&got[2].1);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0]["rawData"], b64("fail"));
    assert_eq!(failed[0]["errorCode"], "Lambda.ProcessingFailed");
    assert_eq!(failed[0]["attemptsMade"], 1);
    assert_eq!(failed[1]["rawData"], b64("skip"));
    assert_eq!(failed[1]["errorCode"], "Lambda.MissingRecordId");
    for f in &failed {
        assert!(
            f["arrivalTimestamp"].as_i64().unwrap()
                <= f["attemptEndingTimestamp"].as_i64().unwrap()
        );
        assert_eq!(
            f["lambdaArn"],
            "arn:aws:lambda:us-east-1:000000000000:function:upper:$LATEST"
        );
        assert!(f["errorMessage"].as_str().is_some());
    }
    let broken = lines(&got[0].1);
    assert_eq!(broken.len(), 1);
    assert_eq!(broken[0]["errorCode"], "Lambda.FunctionError");
    assert_eq!(
        broken[0]["attemptsMade"], 2,
        "one try and NumberOfRetries 1"
    );
    assert_eq!(broken[0]["rawData"], b64("x"));
}

/// The same transformation served over HTTP (Python's standard library
/// server), printing its port first.
const TRANSFORM_HTTP_PY: &str = r#"
import base64, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = [{"recordId": r["recordId"], "result": "Ok",
                "data": base64.b64encode(base64.b64decode(r["data"])[::-1]).decode()}
               for r in req["records"]]
        body = json.dumps({"records": out}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[tokio::test]
async fn a_url_function_transforms_records() {
    use aws_sdk_firehose::types::{
        ProcessingConfiguration, ProcessorParameterName as N, ProcessorType as T,
    };
    use std::io::BufRead;
    let fdir = tempfile::tempdir().unwrap();
    let script = fdir.path().join("h.py");
    std::fs::write(&script, TRANSFORM_HTTP_PY).unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let conf = fdir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "[functions.rev]\nurl = \"http://127.0.0.1:{}/\"\n",
            port.trim()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let bucket = bucket_dir(&srv, "urlfn");
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("rev")
        .extended_s3_destination_configuration(
            extended("urlfn", 1)
                .processing_configuration(
                    ProcessingConfiguration::builder()
                        .enabled(true)
                        .processors(processor(
                            T::Lambda,
                            &[(
                                N::LambdaArn,
                                "arn:aws:lambda:us-east-1:000000000000:function:rev",
                            )],
                        ))
                        .processors(processor(T::AppendDelimiterToRecord, &[]))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.put_record_batch()
        .delivery_stream_name("rev")
        .records(record(b"abc"))
        .records(record(b"xy"))
        .send()
        .await
        .unwrap();
    wait_until("one object", Duration::from_secs(20), || {
        objects(&bucket).len() == 1
    })
    .await;
    assert_eq!(objects(&bucket)[0].1, b"cba\nyx\n");
}

/// `--quotas aws` meters each delivery stream with AWS's DirectPut defaults
/// for the region (1 MiB/s outside the three big regions): the records of a
/// batch past the byte rate fail one by one and are not stored; a second
/// later the rate is back. `--quotas off` lifts it.
#[tokio::test]
async fn puts_past_the_stream_quota_fail_record_by_record() {
    for quotas in ["aws", "off"] {
        let srv = TestServer::start_with(&["--region", "ap-south-1", "--quotas", quotas]);
        let conf = aws_sdk_firehose::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(srv.url())
            .region(Region::new("ap-south-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .retry_config(aws_sdk_firehose::config::retry::RetryConfig::disabled())
            .build();
        let c = Client::from_conf(conf);
        c.create_delivery_stream()
            .delivery_stream_name("metered")
            .extended_s3_destination_configuration(extended("metered", 60).build().unwrap())
            .send()
            .await
            .unwrap();
        let big = vec![b'q'; 1_000_000];
        let out = c
            .put_record_batch()
            .delivery_stream_name("metered")
            .set_records(Some((0..4).map(|_| record(&big)).collect()))
            .send()
            .await
            .unwrap();
        let failed: Vec<Option<&str>> = out
            .request_responses()
            .iter()
            .map(|r| r.error_code())
            .collect();
        if quotas == "off" {
            assert_eq!(out.failed_put_count(), 0);
            continue;
        }
        // One 1,000,000-byte record fits the 1 MiB second; the rest fail.
        assert_eq!(out.failed_put_count(), 3);
        assert_eq!(
            failed,
            [
                None,
                Some("ServiceUnavailableException"),
                Some("ServiceUnavailableException"),
                Some("ServiceUnavailableException")
            ]
        );
        assert!(out.request_responses()[0].record_id().is_some());
        assert!(out.request_responses()[1].record_id().is_none());
        let e = c
            .put_record()
            .delivery_stream_name("metered")
            .record(record(&big))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "ServiceUnavailableException");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        c.put_record()
            .delivery_stream_name("metered")
            .record(record(&big))
            .send()
            .await
            .unwrap();
        let metrics = raw(
            &srv.addr,
            false,
            "GET",
            "/_ripstream/metrics",
            &[],
            Vec::new(),
        )
        .await;
        let text = String::from_utf8_lossy(&metrics.body);
        assert!(
            text.contains(
                r#"ripstream_firehose_throttled_records_total{delivery_stream="metered"} 4"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ripstream_firehose_incoming_records_total{delivery_stream="metered"} 2"#
            ),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_object_in_the_way_of_the_prefix_sends_batches_to_the_error_output() {
    let srv = TestServer::start();
    let s3 = crate::s3::s3(&srv.url());
    s3.create_bucket().bucket("lake").send().await.unwrap();
    // The object `logs` makes every key under `logs/` one the store's file
    // layout cannot hold.
    s3.put_object()
        .bucket("lake")
        .key("logs")
        .body(b"in the way".to_vec().into())
        .send()
        .await
        .unwrap();
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("blocked")
        .extended_s3_destination_configuration(
            extended("lake", 0)
                .prefix("logs/")
                .error_output_prefix("failed/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let out = c
        .put_record_batch()
        .delivery_stream_name("blocked")
        .set_records(Some(vec![record(b"one\n"), record(b"two\n")]))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_put_count(), 0);
    let failed = srv.data_dir().join("objects/lake/failed");
    wait_until("the error output", Duration::from_secs(20), || {
        !objects(&failed).is_empty()
    })
    .await;
    let objs = objects(&failed);
    assert_eq!(objs.len(), 1);
    assert!(objs[0].0.starts_with("processing-failed/"), "{}", objs[0].0);
    let text = String::from_utf8(objs[0].1.clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["errorCode"] == "S3.InvalidKey"));
    // The stream is not stalled: with the way clear, records arrive.
    s3.delete_object()
        .bucket("lake")
        .key("logs")
        .send()
        .await
        .unwrap();
    c.put_record()
        .delivery_stream_name("blocked")
        .record(record(b"three\n"))
        .send()
        .await
        .unwrap();
    let logs = srv.data_dir().join("objects/lake/logs");
    wait_until("the delivery", Duration::from_secs(20), || {
        logs.is_dir() && !objects(&logs).is_empty()
    })
    .await;
    assert_eq!(objects(&logs)[0].1, b"three\n");
}

/// SSE-KMS for delivered objects: the destination's key seals its data
/// objects, the backup's key its backups, each read back through
/// GetObject with S3's encryption headers; a key the keyring lacks is
/// refused at create.
#[tokio::test]
async fn deliveries_to_an_sse_kms_destination_are_sealed_under_its_key() {
    use aws_sdk_firehose::types::{EncryptionConfiguration, KmsEncryptionConfig, S3BackupMode};
    use aws_sdk_s3::types::ServerSideEncryption;
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    std::fs::write(
        &keyring,
        r#"
[[key]]
id = "lake-key"
material = "BgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY="

[[key]]
id = "backup-key"
aliases = ["alias/backups"]
material = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
"#,
    )
    .unwrap();
    let srv = TestServer::start_with(&["--keyring", keyring.to_str().unwrap()]);
    let s3 = crate::s3::s3(&srv.url());
    for b in ["lake", "copies"] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    let c = firehose(&srv.url());
    let kms = |arn: &str| {
        EncryptionConfiguration::builder()
            .kms_encryption_config(
                KmsEncryptionConfig::builder()
                    .awskms_key_arn(arn)
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let lake_arn = "arn:aws:kms:us-east-1:000000000000:key/lake-key";
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nokey")
        .extended_s3_destination_configuration(
            extended("lake", 1)
                .encryption_configuration(kms("arn:aws:kms:us-east-1:000000000000:key/none"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    c.create_delivery_stream()
        .delivery_stream_name("sealed")
        .extended_s3_destination_configuration(
            extended("lake", 1)
                .prefix("events/")
                .encryption_configuration(kms(lake_arn))
                .s3_backup_mode(S3BackupMode::Enabled)
                .s3_backup_configuration(
                    S3DestinationConfiguration::builder()
                        .role_arn(ROLE)
                        .bucket_arn("arn:aws:s3:::copies")
                        .encryption_configuration(kms(
                            "arn:aws:kms:us-east-1:000000000000:alias/backups",
                        ))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("sealed")
        .send()
        .await
        .unwrap();
    let described = d.delivery_stream_description().unwrap().destinations()[0]
        .extended_s3_destination_description()
        .unwrap();
    assert_eq!(
        described
            .encryption_configuration()
            .and_then(|e| e.kms_encryption_config())
            .map(|k| k.awskms_key_arn()),
        Some(lake_arn)
    );
    let records: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("{{\"secret\":\"TOPSECRET-{i:03}\"}}\n").into_bytes())
        .collect();
    let out = c
        .put_record_batch()
        .delivery_stream_name("sealed")
        .set_records(Some(records.iter().map(|r| record(r)).collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_put_count(), 0);
    let (lake, copies) = (bucket_dir(&srv, "lake"), bucket_dir(&srv, "copies"));
    wait_until(
        "the data object and its backup",
        Duration::from_secs(20),
        || !objects(&lake).is_empty() && !objects(&copies).is_empty(),
    )
    .await;
    for (bucket, dir, key_arn) in [
        ("lake", &lake, lake_arn.to_string()),
        (
            "copies",
            &copies,
            "arn:aws:kms:us-east-1:000000000000:key/backup-key".to_string(),
        ),
    ] {
        let mut delivered = Vec::new();
        for (key, on_disk) in objects(dir) {
            assert!(
                !crate::s3_sse::contains(&on_disk, b"TOPSECRET"),
                "{bucket}/{key} is plaintext on disk"
            );
            let got = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(
                got.server_side_encryption(),
                Some(&ServerSideEncryption::AwsKms)
            );
            assert_eq!(
                got.ssekms_key_id(),
                Some(key_arn.as_str()),
                "{bucket}/{key}"
            );
            delivered.push(got.body.collect().await.unwrap().into_bytes().to_vec());
        }
        assert_eq!(delivered.concat(), records.concat(), "{bucket}");
    }
    // A range of a delivered object opens only what it needs.
    let (key, _) = objects(&lake).remove(0);
    let got = s3
        .get_object()
        .bucket("lake")
        .key(&key)
        .range("bytes=12-20")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        &records.concat()[12..=20]
    );
}
