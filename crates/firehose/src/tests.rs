//! The service on a real context (catalog, shard log) in a temporary
//! directory, delivering to real files.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prometheus_client::registry::Registry;
use ripstream_runtime::{ContextConfig, ServiceContext};
use serde_json::{Value, json};

use crate::{Firehose, FirehoseConfig, LocalObjects};

async fn open(dir: &Path) -> (ServiceContext, Firehose) {
    open_with(dir, FirehoseConfig::default()).await
}

async fn open_with(dir: &Path, base: FirehoseConfig) -> (ServiceContext, Firehose) {
    let ctx = ServiceContext::open(ContextConfig::new(dir)).unwrap();
    // The server's log opens encrypted batches with the server's keyring
    // (Data Streams sets it); alone, the test sets it.
    let keyring =
        ripstream_keyring::Keyring::open(&dir.join("keyring.toml"), &ctx.region, &ctx.account_id)
            .unwrap();
    ctx.log.set_cipher(Arc::new(keyring));
    let sink = Arc::new(LocalObjects::new(dir.join("objects")));
    let cfg = FirehoseConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..base
    };
    let svc = Firehose::open_in(
        &ctx,
        cfg,
        crate::Connections::objects(sink),
        &mut Registry::default(),
    )
    .await
    .unwrap();
    (ctx, svc)
}

fn s3(bucket: &str, extra: Value) -> Value {
    let mut d = json!({
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BucketARN": format!("arn:aws:s3:::{bucket}"),
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
    });
    d.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap());
    d
}

fn batch(name: &str, records: &[&[u8]]) -> Value {
    json!({
        "DeliveryStreamName": name,
        "Records": records.iter().map(|r| json!({"Data": STANDARD.encode(r)})).collect::<Vec<_>>(),
    })
}

/// Every object under a bucket, by key, with its (gunzipped) content.
fn objects(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                // A write in flight: its staging file (`name#n`), renamed
                // into place meanwhile, is not an object yet.
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
                }
                out.push((key, data));
            }
        }
    }
    out.sort();
    out
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out");
}

#[tokio::test]
async fn create_describe_list_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, svc) = open(dir.path()).await;
    let out = svc
        .create_delivery_stream(
            json!({"DeliveryStreamName": "a", "S3DestinationConfiguration": s3("bkt", json!({}))}),
        )
        .await
        .unwrap();
    assert_eq!(
        out["DeliveryStreamARN"],
        "arn:aws:firehose:us-east-1:000000000000:deliverystream/a"
    );
    let e = svc
        .create_delivery_stream(
            json!({"DeliveryStreamName": "a", "S3DestinationConfiguration": s3("bkt", json!({}))}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ResourceInUseException");
    for bad in [
        json!({"DeliveryStreamName": "x", "HttpEndpointDestinationConfiguration": {}}),
        json!({"DeliveryStreamName": "x", "DeliveryStreamType": "KinesisStreamAsSource", "ExtendedS3DestinationConfiguration": s3("bkt", json!({}))}),
        json!({"DeliveryStreamName": "x"}),
        json!({"DeliveryStreamName": "x", "ExtendedS3DestinationConfiguration": s3("bkt", json!({"EncryptionConfiguration": {"KMSEncryptionConfig": {"AWSKMSKeyARN": "arn:aws:kms:us-east-1:123456789012:key/k"}}}))}),
    ] {
        let e = svc.create_delivery_stream(bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), "InvalidArgumentException", "{bad}");
    }
    let d = svc
        .describe_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    let d = &d["DeliveryStreamDescription"];
    assert_eq!(d["DeliveryStreamStatus"], "ACTIVE");
    assert_eq!(d["VersionId"], "1");
    assert_eq!(d["DeliveryStreamType"], "DirectPut");
    assert_eq!(
        d["DeliveryStreamEncryptionConfiguration"]["Status"],
        "DISABLED"
    );
    assert_eq!(d["HasMoreDestinations"], false);
    let dest = &d["Destinations"][0];
    assert_eq!(dest["DestinationId"], "destinationId-000000000001");
    assert_eq!(
        dest["S3DestinationDescription"]["CompressionFormat"],
        "UNCOMPRESSED"
    );
    assert_eq!(
        dest["ExtendedS3DestinationDescription"]["S3BackupMode"],
        "Disabled"
    );
    let none = svc
        .describe_delivery_stream(json!({"DeliveryStreamName": "a", "ExclusiveStartDestinationId": "destinationId-000000000001"}))
        .await
        .unwrap();
    assert_eq!(none["DeliveryStreamDescription"]["Destinations"], json!([]));

    svc.create_delivery_stream(json!({"DeliveryStreamName": "c", "ExtendedS3DestinationConfiguration": s3("bkt", json!({}))}))
        .await
        .unwrap();
    let l = svc
        .list_delivery_streams(json!({"Limit": 1}))
        .await
        .unwrap();
    assert_eq!(
        l,
        json!({"DeliveryStreamNames": ["a"], "HasMoreDeliveryStreams": true})
    );
    let l = svc
        .list_delivery_streams(json!({"ExclusiveStartDeliveryStreamName": "a"}))
        .await
        .unwrap();
    assert_eq!(
        l,
        json!({"DeliveryStreamNames": ["c"], "HasMoreDeliveryStreams": false})
    );

    let upd = |v: &str| {
        json!({"DeliveryStreamName": "a", "CurrentDeliveryStreamVersionId": v, "DestinationId": "destinationId-000000000001",
               "ExtendedS3DestinationUpdate": {"CompressionFormat": "GZIP"}})
    };
    assert_eq!(
        svc.update_destination(upd("2")).await.unwrap_err().code(),
        "ConcurrentModificationException"
    );
    svc.update_destination(upd("1")).await.unwrap();
    let d = svc
        .describe_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    assert_eq!(d["DeliveryStreamDescription"]["VersionId"], "2");
    let ext =
        &d["DeliveryStreamDescription"]["Destinations"][0]["ExtendedS3DestinationDescription"];
    assert_eq!(ext["CompressionFormat"], "GZIP");
    assert_eq!(ext["BufferingHints"]["SizeInMBs"], 1);

    // Tags.
    svc.tag_delivery_stream(
        json!({"DeliveryStreamName": "a", "Tags": [{"Key": "k1", "Value": "v"}, {"Key": "k0"}]}),
    )
    .await
    .unwrap();
    let t = svc
        .list_tags_for_delivery_stream(json!({"DeliveryStreamName": "a", "Limit": 1}))
        .await
        .unwrap();
    assert_eq!(t, json!({"Tags": [{"Key": "k0"}], "HasMoreTags": true}));
    let many: Vec<Value> = (0..49).map(|i| json!({"Key": format!("t{i}")})).collect();
    let e = svc
        .tag_delivery_stream(json!({"DeliveryStreamName": "a", "Tags": many}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "LimitExceededException");
    svc.untag_delivery_stream(json!({"DeliveryStreamName": "a", "TagKeys": ["k0"]}))
        .await
        .unwrap();
    let t = svc
        .list_tags_for_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    assert_eq!(
        t,
        json!({"Tags": [{"Key": "k1", "Value": "v"}], "HasMoreTags": false})
    );

    // Encryption.
    svc.start_delivery_stream_encryption(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    let d = svc
        .describe_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    assert_eq!(
        d["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"],
        json!({"KeyType": "AWS_OWNED_CMK", "Status": "ENABLED"})
    );
    let p = svc.put_record_batch(batch("a", &[b"x"])).await.unwrap();
    assert_eq!(p["Encrypted"], true);
    let e = svc
        .start_delivery_stream_encryption(json!({"DeliveryStreamName": "a", "DeliveryStreamEncryptionConfigurationInput": {"KeyType": "CUSTOMER_MANAGED_CMK", "KeyARN": "arn:aws:kms:us-east-1:000000000000:key/nope"}}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "InvalidKMSResourceException");
    svc.stop_delivery_stream_encryption(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    // 25 changes a day, Start and Stop together (the refused call above
    // does not count): two made, 23 more allowed, then none.
    for i in 0..23 {
        let call = json!({"DeliveryStreamName": "a"});
        if i % 2 == 0 {
            svc.start_delivery_stream_encryption(call).await.unwrap();
        } else {
            svc.stop_delivery_stream_encryption(call).await.unwrap();
        }
    }
    let e = svc
        .stop_delivery_stream_encryption(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "LimitExceededException");
    let d = svc
        .describe_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    assert_eq!(
        d["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"]["Status"],
        "ENABLED",
        "the refused Stop left encryption on"
    );

    svc.delete_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap();
    let e = svc
        .describe_delivery_stream(json!({"DeliveryStreamName": "a"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ResourceNotFoundException");
    assert!(ctx.log.partition_ids().iter().all(|p| p != "firehose-1"));
    ctx.close().await;
}

#[tokio::test]
async fn delivers_gzip_objects_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("objects/bkt");
    std::fs::create_dir_all(&bucket).unwrap();
    {
        let (ctx, svc) = open(dir.path()).await;
        let engine = tokio::spawn(svc.background());
        svc.create_delivery_stream(
            json!({"DeliveryStreamName": "s", "ExtendedS3DestinationConfiguration":
            s3("bkt", json!({"CompressionFormat": "GZIP", "Prefix": "logs/"}))}),
        )
        .await
        .unwrap();
        let out = svc
            .put_record_batch(batch("s", &[b"one\n", b"two\n"]))
            .await
            .unwrap();
        assert_eq!(out["FailedPutCount"], 0);
        assert!(
            out["RequestResponses"][0]["RecordId"]
                .as_str()
                .unwrap()
                .len()
                > 100
        );
        wait_for(|| !objects(&bucket).is_empty()).await;
        let objs = objects(&bucket);
        assert_eq!(objs.len(), 1);
        let (key, data) = &objs[0];
        assert!(key.starts_with("logs/20"), "{key}");
        assert!(key.contains("/s-1-20") && key.ends_with(".gz"), "{key}");
        assert_eq!(data, b"one\ntwo\n");
        // The object is durable before the checkpoint moves: stopping in
        // between would deliver it again (at least once), so the restart
        // below waits for the checkpoint.
        let uid = svc.inner.streams.read()["s"].rec.uid;
        wait_for(|| svc.inner.checkpoint(uid).unwrap() == 2).await;
        engine.abort();
        let _ = engine.await;
        ctx.close().await;
    }
    // Restarted: the delivered records are not delivered again.
    let (ctx, svc) = open(dir.path()).await;
    let engine = tokio::spawn(svc.background());
    svc.put_record(
        json!({"DeliveryStreamName": "s", "Record": {"Data": STANDARD.encode(b"three\n")}}),
    )
    .await
    .unwrap();
    wait_for(|| objects(&bucket).len() == 2).await;
    let all: Vec<Vec<u8>> = objects(&bucket).into_iter().map(|(_, d)| d).collect();
    assert!(all.contains(&b"three\n".to_vec()), "{all:?}");
    engine.abort();
    let _ = engine.await;
    ctx.close().await;
}

#[tokio::test]
async fn a_missing_bucket_holds_records_until_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, svc) = open(dir.path()).await;
    let engine = tokio::spawn(svc.background());
    svc.create_delivery_stream(
        json!({"DeliveryStreamName": "s", "S3DestinationConfiguration": s3("later", json!({}))}),
    )
    .await
    .unwrap();
    svc.put_record_batch(batch("s", &[b"a", b"b"]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bucket = dir.path().join("objects/later");
    std::fs::create_dir_all(&bucket).unwrap();
    wait_for(|| !objects(&bucket).is_empty()).await;
    assert_eq!(objects(&bucket)[0].1, b"ab");
    engine.abort();
    let _ = engine.await;
    ctx.close().await;
}

/// The records of a bucket's objects (newline-delimited), in no order.
fn delivered_lines(bucket: &Path) -> Vec<String> {
    let mut out: Vec<String> = objects(bucket)
        .into_iter()
        .flat_map(|(_, d)| {
            String::from_utf8(d)
                .unwrap()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_small_memory_budget_shared_by_streams_still_delivers_every_record_once() {
    const LIMIT: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("objects/bkt");
    std::fs::create_dir_all(&bucket).unwrap();
    let (ctx, svc) = open_with(
        dir.path(),
        FirehoseConfig {
            buffer_memory_bytes: LIMIT,
            ..FirehoseConfig::default()
        },
    )
    .await;
    let engine = tokio::spawn(svc.background());
    // Buffers of 1 MiB the interval flushes every 2 s: one object per
    // stream and interval but for the flushes the budget forces.
    let streams: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
    for name in &streams {
        svc.create_delivery_stream(json!({"DeliveryStreamName": name,
            "ExtendedS3DestinationConfiguration": s3("bkt", json!({
                "Prefix": format!("{name}/"),
                "ErrorOutputPrefix": "err/",
                "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 2}}))}))
            .await
            .unwrap();
    }
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (svc, peak) = (svc.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(svc.buffered_bytes(), std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut want = Vec::new();
    for round in 0..10 {
        for name in &streams {
            let recs: Vec<String> = (0..20)
                .map(|j| format!("{name}-{round:02}-{j:02}-{}\n", "x".repeat(60)))
                .collect();
            want.extend(recs.iter().map(|r| r.trim_end().to_string()));
            let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_bytes()).collect();
            let out = svc.put_record_batch(batch(name, &refs)).await.unwrap();
            assert_eq!(out["FailedPutCount"], 0);
        }
    }
    want.sort();
    // 5 streams × 10 × 20 records of ~72 bytes: 72 KB against 4 KiB.
    for _ in 0..600 {
        if delivered_lines(&bucket).len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(delivered_lines(&bucket), want);
    assert!(
        objects(&bucket).len() >= 72_000 / LIMIT,
        "{} objects",
        objects(&bucket).len()
    );
    wait_for(|| svc.buffered_bytes() == 0).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak > 0 && peak <= LIMIT, "peak {peak}");
    engine.abort();
    let _ = engine.await;
    assert_eq!(svc.buffered_bytes(), 0);
    ctx.close().await;
}

#[tokio::test]
async fn a_failing_destination_holds_no_buffer_between_attempts() {
    let dir = tempfile::tempdir().unwrap();
    // A budget smaller than the first record: it is taken alone.
    let (ctx, svc) = open_with(
        dir.path(),
        FirehoseConfig {
            buffer_memory_bytes: 1024,
            ..FirehoseConfig::default()
        },
    )
    .await;
    let engine = tokio::spawn(svc.background());
    svc.create_delivery_stream(
        json!({"DeliveryStreamName": "s", "S3DestinationConfiguration": s3("later", json!({}))}),
    )
    .await
    .unwrap();
    let big = vec![b'z'; 100_000];
    svc.put_record_batch(batch("s", &[&big, b"end"]))
        .await
        .unwrap();
    // Failing: the batch is read, tried, and dropped again and again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut zero = 0;
    for _ in 0..40 {
        if svc.buffered_bytes() == 0 {
            zero += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        zero >= 30,
        "the buffer was held in {} of 40 samples",
        40 - zero
    );
    let bucket = dir.path().join("objects/later");
    std::fs::create_dir_all(&bucket).unwrap();
    // The big record fills the budget alone: the next one is a second
    // object.
    wait_for(|| objects(&bucket).len() == 2).await;
    let mut got: Vec<Vec<u8>> = objects(&bucket).into_iter().map(|(_, d)| d).collect();
    got.sort_by_key(Vec::len);
    assert_eq!(got, [b"end".to_vec(), big.clone()]);
    wait_for(|| svc.buffered_bytes() == 0).await;
    engine.abort();
    let _ = engine.await;
    ctx.close().await;
}

#[tokio::test]
async fn a_key_the_store_refuses_sends_the_batch_to_the_error_output() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("objects/bkt");
    std::fs::create_dir_all(&bucket).unwrap();
    // An object `logs` is in the way of every key under `logs/`.
    std::fs::write(bucket.join("logs"), b"in the way").unwrap();
    let (ctx, svc) = open(dir.path()).await;
    let engine = tokio::spawn(svc.background());
    svc.create_delivery_stream(json!({"DeliveryStreamName": "s",
        "ExtendedS3DestinationConfiguration": s3("bkt", json!({
            "Prefix": "logs/", "ErrorOutputPrefix": "errors/"}))}))
        .await
        .unwrap();
    svc.put_record_batch(batch("s", &[b"one\n", b"two\n"]))
        .await
        .unwrap();
    let errors = bucket.join("errors");
    wait_for(|| errors.is_dir() && !objects(&errors).is_empty()).await;
    let objs = objects(&errors);
    assert_eq!(objs.len(), 1);
    assert!(
        objs[0].0.starts_with("processing-failed/20"),
        "{}",
        objs[0].0
    );
    let lines: Vec<Value> = String::from_utf8(objs[0].1.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, raw) in lines.iter().zip([&b"one\n"[..], b"two\n"]) {
        assert_eq!(line["errorCode"], "S3.InvalidKey");
        assert_eq!(line["rawData"], STANDARD.encode(raw));
    }
    // Not stalled: once the way is clear, the next records are delivered.
    std::fs::remove_file(bucket.join("logs")).unwrap();
    svc.put_record_batch(batch("s", &[b"three\n"]))
        .await
        .unwrap();
    let logs = bucket.join("logs");
    wait_for(|| logs.is_dir() && !objects(&logs).is_empty()).await;
    assert_eq!(objects(&logs)[0].1, b"three\n");
    assert_eq!(objects(&errors).len(), 1);
    engine.abort();
    let _ = engine.await;
    ctx.close().await;
}

#[tokio::test]
async fn a_refused_prefix_without_an_error_prefix_still_has_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("objects/bkt");
    std::fs::create_dir_all(&bucket).unwrap();
    // No ErrorOutputPrefix: errors would go under `logs/` too, which the
    // object `logs` blocks as well.
    std::fs::write(bucket.join("logs"), b"in the way").unwrap();
    let (ctx, svc) = open(dir.path()).await;
    let engine = tokio::spawn(svc.background());
    svc.create_delivery_stream(json!({"DeliveryStreamName": "s",
        "ExtendedS3DestinationConfiguration": s3("bkt", json!({"Prefix": "logs/"}))}))
        .await
        .unwrap();
    svc.put_record_batch(batch("s", &[b"one\n"])).await.unwrap();
    let errors = bucket.join("processing-failed");
    wait_for(|| errors.is_dir() && !objects(&errors).is_empty()).await;
    let objs = objects(&errors);
    assert!(objs[0].0.starts_with("20"), "{}", objs[0].0);
    let line: Value = serde_json::from_slice(objs[0].1.trim_ascii_end()).unwrap();
    assert_eq!(line["errorCode"], "S3.InvalidKey");
    assert_eq!(line["rawData"], STANDARD.encode(b"one\n"));
    engine.abort();
    let _ = engine.await;
    ctx.close().await;
}

/// Fails the first put under `fail_prefix` (a transient S3 error), then
/// stores as [`LocalObjects`] does.
#[derive(Debug)]
struct FailsOnce {
    inner: LocalObjects,
    fail_prefix: &'static str,
    failed: std::sync::atomic::AtomicBool,
}

impl crate::sink::ObjectSink for FailsOnce {
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        body: bytes::Bytes,
    ) -> crate::sink::BoxFuture<'a, Result<(), crate::sink::SinkError>> {
        use std::sync::atomic::Ordering;
        if key.starts_with(self.fail_prefix) && !self.failed.swap(true, Ordering::SeqCst) {
            return Box::pin(async move {
                Err(crate::sink::SinkError::NoSuchBucket(bucket.to_string()))
            });
        }
        self.inner.put(bucket, key, body)
    }
}

/// A function that fails "x" on its first invocation only: the retry of a
/// flush whose error output could not be stored gets another answer, and
/// the record must still reach the destination (the data object the first
/// attempt stored does not hold it).
#[tokio::test]
async fn a_retried_flush_with_a_function_loses_no_record_when_the_function_answers_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("f.py");
    let count = dir.path().join("count");
    std::fs::write(
        &script,
        format!(
            r#"
import base64, json, os, sys
path = {count:?}
n = int(open(path).read()) if os.path.exists(path) else 0
open(path, "w").write(str(n + 1))
req = json.load(sys.stdin)
out = []
for r in req["records"]:
    d = base64.b64decode(r["data"]).decode()
    res = "ProcessingFailed" if d == "x" and n == 0 else "Ok"
    out.append({{"recordId": r["recordId"], "result": res, "data": r["data"]}})
json.dump({{"records": out}}, sys.stdout)
"#
        ),
    )
    .unwrap();
    let ctx = ServiceContext::open(ContextConfig::new(dir.path())).unwrap();
    let keyring = ripstream_keyring::Keyring::open(
        &dir.path().join("keyring.toml"),
        &ctx.region,
        &ctx.account_id,
    )
    .unwrap();
    ctx.log.set_cipher(Arc::new(keyring));
    let root = dir.path().join("objects");
    std::fs::create_dir_all(root.join("bkt")).unwrap();
    let sink = Arc::new(FailsOnce {
        inner: LocalObjects::new(&root),
        fail_prefix: "errors/",
        failed: Default::default(),
    });
    let mut functions = crate::lambda::Functions::new();
    functions.insert(
        "f".into(),
        crate::lambda::FunctionConfig::Command(vec![
            "python3".into(),
            script.to_string_lossy().into_owned(),
        ]),
    );
    let cfg = FirehoseConfig {
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        functions,
        ..FirehoseConfig::default()
    };
    let svc = Firehose::open_in(
        &ctx,
        cfg,
        crate::Connections::objects(sink),
        &mut Registry::default(),
    )
    .await
    .unwrap();
    svc.create_delivery_stream(json!({
        "DeliveryStreamName": "fn",
        "ExtendedS3DestinationConfiguration": s3("bkt", json!({
            "Prefix": "data/",
            "ErrorOutputPrefix": "errors/",
            "ProcessingConfiguration": {"Enabled": true, "Processors": [
                {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn",
                    "ParameterValue": "arn:aws:lambda:us-east-1:000000000000:function:f"}]},
                {"Type": "AppendDelimiterToRecord", "Parameters": []}]},
        })),
    }))
    .await
    .unwrap();
    let engine = tokio::spawn(svc.background());
    svc.put_record_batch(batch("fn", &[b"x", b"y"]))
        .await
        .unwrap();
    let bucket = root.join("bkt");
    wait_for(|| {
        objects(&bucket)
            .iter()
            .any(|(k, d)| k.starts_with("data/") && d.windows(2).any(|w| w == b"x\n"))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().trim(),
        "2",
        "the function ran once per attempt"
    );
    // The retry's data object took the first attempt's key: written over,
    // not beside it.
    let data: Vec<Vec<u8>> = objects(&bucket)
        .into_iter()
        .filter(|(k, _)| k.starts_with("data/"))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(data, [b"x\ny\n".to_vec()]);
    engine.abort();
}

#[tokio::test]
async fn an_opensearch_destination_is_only_updated_to_its_own_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (_ctx, svc) = open(dir.path()).await;
    let role = "arn:aws:iam::000000000000:role/firehose";
    svc.create_delivery_stream(json!({
        "DeliveryStreamName": "search",
        "AmazonopensearchserviceDestinationConfiguration": {
            "RoleARN": role, "IndexName": "logs", "ClusterEndpoint": "https://search.example.com:9200",
            "S3Configuration": s3("bkt", json!({})),
        },
    }))
    .await
    .unwrap();
    svc.create_delivery_stream(
        json!({"DeliveryStreamName": "plain", "S3DestinationConfiguration": s3("bkt", json!({}))}),
    )
    .await
    .unwrap();
    let update = |name: &str, body: Value| {
        let mut u = json!({"DeliveryStreamName": name, "CurrentDeliveryStreamVersionId": "1",
            "DestinationId": "destinationId-000000000001"});
        u.as_object_mut()
            .unwrap()
            .extend(body.as_object().cloned().unwrap());
        u
    };
    let to_s3 = update("search", json!({"S3DestinationUpdate": {"Prefix": "p/"}}));
    let e = svc.update_destination(to_s3).await.unwrap_err();
    assert_eq!(e.code(), "InvalidArgumentException");
    let to_search = update(
        "plain",
        json!({"AmazonopensearchserviceDestinationUpdate": {"IndexName": "x"}}),
    );
    let e = svc.update_destination(to_search).await.unwrap_err();
    assert_eq!(e.code(), "InvalidArgumentException");
    // Its own kind is fine.
    let same = update(
        "search",
        json!({"AmazonopensearchserviceDestinationUpdate": {"IndexName": "logs2"}}),
    );
    svc.update_destination(same).await.unwrap();
}
