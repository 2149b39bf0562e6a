//! Firehose dynamic partitioning, Decompression / CloudWatchLogProcessing
//! and CustomTimeZone through the real binary: records partitioned by a JQ
//! query and by a command function's `metadata.partitionKeys` into their
//! prefixes (read back through the S3 API), records that cannot be
//! partitioned and those past the active-partition limit in the error
//! output, CloudWatch Logs subscription data inflated and split into its
//! messages, and prefixes evaluated in a custom time zone.

use std::io::Write;
use std::time::Duration;

use aws_sdk_firehose::types::{
    BufferingHints, DynamicPartitioningConfiguration, ExtendedS3DestinationUpdate,
    ProcessingConfiguration, Processor, ProcessorParameter, ProcessorParameterName as N,
    ProcessorType as T, RetryOptions,
};
use base64::Engine as _;
use serde_json::Value;

use crate::firehose::{ROLE, bucket_dir, firehose, objects, record, wait_until};
use crate::support::*;

fn processor(ty: T, params: &[(N, &str)]) -> Processor {
    let mut p = Processor::builder().r#type(ty);
    for (n, v) in params {
        p = p.parameters(
            ProcessorParameter::builder()
                .parameter_name(n.clone())
                .parameter_value(*v)
                .build()
                .unwrap(),
        );
    }
    p.build().unwrap()
}

fn jq(query: &str) -> Processor {
    processor(
        T::MetadataExtraction,
        &[
            (N::MetadataExtractionQuery, query),
            (N::JsonParsingEngine, "JQ-1.6"),
        ],
    )
}

fn processing(procs: Vec<Processor>) -> ProcessingConfiguration {
    ProcessingConfiguration::builder()
        .enabled(true)
        .set_processors(Some(procs))
        .build()
}

fn dynamic() -> DynamicPartitioningConfiguration {
    DynamicPartitioningConfiguration::builder()
        .enabled(true)
        .retry_options(RetryOptions::builder().duration_in_seconds(60).build())
        .build()
}

/// An ExtendedS3 destination with dynamic partitioning: AWS's smallest
/// buffer size for it (64 MiB) and a one-second interval, so each test's
/// records flush at once.
fn partitioned(
    bucket: &str,
    prefix: &str,
) -> aws_sdk_firehose::types::builders::ExtendedS3DestinationConfigurationBuilder {
    aws_sdk_firehose::types::ExtendedS3DestinationConfiguration::builder()
        .role_arn(ROLE)
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .prefix(prefix)
        .error_output_prefix("errors/!{firehose:error-output-type}/")
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(64)
                .interval_in_seconds(1)
                .build(),
        )
        .dynamic_partitioning_configuration(dynamic())
}

/// The error-output documents of the objects under `prefix`.
fn error_docs(all: &[(String, Vec<u8>)], prefix: &str) -> Vec<Value> {
    all.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .flat_map(|(_, d)| {
            d.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn raw(doc: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(doc["rawData"].as_str().unwrap())
        .unwrap()
}

#[tokio::test]
async fn jq_partitions_records_into_their_prefixes() {
    let srv = TestServer::start();
    let s3 = crate::s3::s3(&srv.url());
    s3.create_bucket().bucket("parts").send().await.unwrap();
    let bucket = bucket_dir(&srv, "parts");
    let c = firehose(&srv.url());
    let query = r#"{customer: .customer_id, year: .ts | strftime("%Y")}"#;
    let prefix = "customer=!{partitionKeyFromQuery:customer}/year=!{partitionKeyFromQuery:year}/";

    // AWS's rules, each an InvalidArgumentException.
    let refused = [
        // A query that does not compile, and one with a refused construct.
        partitioned("parts", prefix)
            .processing_configuration(processing(vec![jq("{customer: .customer_id")]))
            .build()
            .unwrap(),
        partitioned("parts", prefix)
            .processing_configuration(processing(vec![jq("{customer: [..], year: 1}")]))
            .build()
            .unwrap(),
        // The prefix uses a key the query does not produce.
        partitioned("parts", "c=!{partitionKeyFromQuery:nope}/")
            .processing_configuration(processing(vec![jq(query)]))
            .build()
            .unwrap(),
        // No partition key in the prefix.
        partitioned("parts", "plain/")
            .processing_configuration(processing(vec![jq(query)]))
            .build()
            .unwrap(),
        // No error output prefix.
        partitioned("parts", prefix)
            .error_output_prefix("")
            .processing_configuration(processing(vec![jq(query)]))
            .build()
            .unwrap(),
        // Below 64 MiB.
        partitioned("parts", prefix)
            .buffering_hints(
                BufferingHints::builder()
                    .size_in_mbs(5)
                    .interval_in_seconds(1)
                    .build(),
            )
            .processing_configuration(processing(vec![jq(query)]))
            .build()
            .unwrap(),
    ];
    for (i, dest) in refused.into_iter().enumerate() {
        let e = c
            .create_delivery_stream()
            .delivery_stream_name(format!("bad{i}"))
            .extended_s3_destination_configuration(dest)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException", "case {i}");
    }

    c.create_delivery_stream()
        .delivery_stream_name("bycustomer")
        .extended_s3_destination_configuration(
            partitioned("parts", prefix)
                .processing_configuration(processing(vec![
                    processor(T::AppendDelimiterToRecord, &[]),
                    jq(query),
                ]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("bycustomer")
        .send()
        .await
        .unwrap();
    let ext = d.delivery_stream_description().unwrap().destinations()[0]
        .extended_s3_destination_description()
        .unwrap()
        .clone();
    let dp = ext.dynamic_partitioning_configuration().unwrap();
    assert_eq!(dp.enabled(), Some(true));
    assert_eq!(
        dp.retry_options().and_then(|r| r.duration_in_seconds()),
        Some(60)
    );

    // 2019-08-09 (1565382027) and 2021-01-01 (1609459200).
    let good = [
        r#"{"customer_id":"a","ts":1565382027,"n":1}"#,
        r#"{"customer_id":"b","ts":1565382027,"n":2}"#,
        r#"{"customer_id":"a","ts":1609459200,"n":3}"#,
        r#"{"customer_id":"a","ts":1565382027,"n":4}"#,
    ];
    let bad = ["not json", r#"{"ts":1565382027,"n":5}"#];
    let out = c
        .put_record_batch()
        .delivery_stream_name("bycustomer")
        .set_records(Some(
            good.iter()
                .chain(bad.iter())
                .map(|r| record(r.as_bytes()))
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_put_count(), 0);
    wait_until(
        "three partitions and the error output",
        Duration::from_secs(30),
        || objects(&bucket).len() >= 4,
    )
    .await;
    // Read back through the S3 API, partition by partition.
    let read = |p: &'static str| {
        let s3 = s3.clone();
        async move {
            let l = s3
                .list_objects_v2()
                .bucket("parts")
                .prefix(p)
                .send()
                .await
                .unwrap();
            let mut all = Vec::new();
            for o in l.contents() {
                let key = o.key().unwrap().to_string();
                assert!(
                    key[p.len()..].starts_with("bycustomer-1-"),
                    "object name: {key}"
                );
                let body = s3
                    .get_object()
                    .bucket("parts")
                    .key(&key)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes();
                all.extend_from_slice(&body);
            }
            String::from_utf8(all).unwrap()
        }
    };
    assert_eq!(
        read("customer=a/year=2019/").await,
        format!("{}\n{}\n", good[0], good[3])
    );
    assert_eq!(
        read("customer=b/year=2019/").await,
        format!("{}\n", good[1])
    );
    assert_eq!(
        read("customer=a/year=2021/").await,
        format!("{}\n", good[2])
    );
    // The two that could not be partitioned, as they were put.
    let all = objects(&bucket);
    let errs = error_docs(&all, "errors/partitioning-failed/");
    assert_eq!(errs.len(), 2, "{all:?}");
    let mut raws: Vec<Vec<u8>> = errs.iter().map(raw).collect();
    raws.sort();
    let mut want: Vec<Vec<u8>> = bad.iter().map(|b| b.as_bytes().to_vec()).collect();
    want.sort();
    assert_eq!(raws, want);
    for e in &errs {
        assert_eq!(
            e["errorCode"],
            "DynamicPartitioning.MetadataExtractionFailed"
        );
        assert!(e["errorMessage"].as_str().unwrap().len() > 10);
    }
    // Error output keys: the type, then the default time prefix.
    let key = &all
        .iter()
        .find(|(k, _)| k.starts_with("errors/"))
        .unwrap()
        .0;
    // With expressions in ErrorOutputPrefix, no default time prefix.
    let rest = &key["errors/partitioning-failed/".len()..];
    assert!(rest.starts_with("bycustomer-1-"), "{key}");

    // Dynamic partitioning cannot be turned on for a stream without it.
    c.create_delivery_stream()
        .delivery_stream_name("plain")
        .extended_s3_destination_configuration(
            crate::firehose::extended("parts", 1)
                .prefix("plain/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let e = c
        .update_destination()
        .delivery_stream_name("plain")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .extended_s3_destination_update(
            ExtendedS3DestinationUpdate::builder()
                .prefix(prefix)
                .error_output_prefix("errors/")
                .buffering_hints(
                    BufferingHints::builder()
                        .size_in_mbs(64)
                        .interval_in_seconds(60)
                        .build(),
                )
                .processing_configuration(processing(vec![jq(query)]))
                .dynamic_partitioning_configuration(dynamic())
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(message(&e).contains("cannot be enabled"), "{}", message(&e));
    // An update of a partitioned stream's query is checked the same way.
    let e = c
        .update_destination()
        .delivery_stream_name("bycustomer")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .extended_s3_destination_update(
            ExtendedS3DestinationUpdate::builder()
                .processing_configuration(processing(vec![jq(r#"{customer: env.HOME}"#)]))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(message(&e).contains("not allowed"), "{}", message(&e));
}

const KEYS_PY: &str = r#"
import base64, json, sys
req = json.load(sys.stdin)
out = []
for r in req["records"]:
    d = json.loads(base64.b64decode(r["data"]))
    res = {"recordId": r["recordId"], "result": "Ok",
           "data": base64.b64encode(json.dumps({"v": d["v"]}).encode()).decode()}
    if "kind" in d:
        res["metadata"] = {"partitionKeys": {"kind": d["kind"], "shard": d["v"] % 2}}
    out.append(res)
json.dump({"records": out}, sys.stdout)
"#;

#[tokio::test]
async fn a_functions_partition_keys_partition_records() {
    let fdir = tempfile::tempdir().unwrap();
    let script = fdir.path().join("keys.py");
    std::fs::write(&script, KEYS_PY).unwrap();
    let conf = fdir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "[functions.keys]\ncommand = [\"python3\", {:?}]\n",
            script.to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&["--config", conf.to_str().unwrap()]);
    let bucket = bucket_dir(&srv, "lam");
    let c = firehose(&srv.url());
    let lambda = processor(
        T::Lambda,
        &[(
            N::LambdaArn,
            "arn:aws:lambda:us-east-1:000000000000:function:keys",
        )],
    );
    // A Lambda key without a Lambda processor is refused.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nolambda")
        .extended_s3_destination_configuration(
            partitioned("lam", "!{partitionKeyFromLambda:kind}/")
                .processing_configuration(processing(vec![jq("{a: .a}")]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    c.create_delivery_stream()
        .delivery_stream_name("bykind")
        .extended_s3_destination_configuration(
            partitioned(
                "lam",
                "kind=!{partitionKeyFromLambda:kind}/shard=!{partitionKeyFromLambda:shard}/",
            )
            .processing_configuration(processing(vec![
                lambda,
                processor(T::AppendDelimiterToRecord, &[]),
            ]))
            .build()
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let recs = [
        r#"{"kind":"click","v":1}"#,
        r#"{"kind":"view","v":2}"#,
        r#"{"kind":"click","v":3}"#,
        r#"{"v":4}"#,
    ];
    c.put_record_batch()
        .delivery_stream_name("bykind")
        .set_records(Some(recs.iter().map(|r| record(r.as_bytes())).collect()))
        .send()
        .await
        .unwrap();
    wait_until(
        "two partitions and the error output",
        Duration::from_secs(30),
        || objects(&bucket).len() >= 3,
    )
    .await;
    let all = objects(&bucket);
    let under = |p: &str| -> String {
        all.iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(_, d)| String::from_utf8(d.clone()).unwrap())
            .collect()
    };
    // The function's output (not the input) is what is delivered.
    assert_eq!(under("kind=click/shard=1/"), "{\"v\": 1}\n{\"v\": 3}\n");
    assert_eq!(under("kind=view/shard=0/"), "{\"v\": 2}\n");
    let errs = error_docs(&all, "errors/partitioning-failed/");
    assert_eq!(errs.len(), 1, "{all:?}");
    assert!(
        errs[0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("metadata.partitionKeys")
    );
}

/// A query is request input run on every record: constructs that can loop
/// or grow without bound are refused at create, named in the message, and
/// an accepted query whose output is too large for a partition sends the
/// record to the error output, as a failing query does.
#[tokio::test]
async fn unbounded_queries_are_refused_and_oversized_outputs_go_to_the_error_output() {
    let srv = TestServer::start();
    let s3 = crate::s3::s3(&srv.url());
    s3.create_bucket().bucket("bounded").send().await.unwrap();
    let bucket = bucket_dir(&srv, "bounded");
    let c = firehose(&srv.url());
    let prefix = "k=!{partitionKeyFromQuery:k}/";
    for (q, named) in [
        ("{k: ([range(1e9)] | length)}", "`range/1`"),
        ("{k: ([limit(3; .a[])] | length)}", "`limit/2`"),
        ("{k: ([repeat(.)] | length)}", "`repeat/1`"),
        ("{k: (.n | until(. > 3; . + 1))}", "`until/2`"),
        ("{k: ([recurse] | length)}", "`recurse/0`"),
        ("{k: ([..] | length)}", "`..`"),
        ("def f: f; {k: f}", "`def`"),
        ("{k: .a[]}", "more than one output as an object value"),
        (r#"{k: ("x" * 1000000000)}"#, "`*`"),
    ] {
        let e = c
            .create_delivery_stream()
            .delivery_stream_name("unbounded")
            .extended_s3_destination_configuration(
                partitioned("bounded", prefix)
                    .processing_configuration(processing(vec![jq(q)]))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException", "{q}");
        assert!(message(&e).contains(named), "{q}: {}", message(&e));
    }
    // `.` is accepted, and yields as many keys as the record has.
    c.create_delivery_stream()
        .delivery_stream_name("whole")
        .extended_s3_destination_configuration(
            partitioned("bounded", prefix)
                .processing_configuration(processing(vec![
                    jq("."),
                    processor(T::AppendDelimiterToRecord, &[]),
                ]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let wide: Vec<String> = (0..60).map(|i| format!(r#""f{i}":{i}"#)).collect();
    let wide = format!(r#"{{"k":"w",{}}}"#, wide.join(","));
    let recs = [r#"{"k":"a","n":1}"#.to_string(), wide.clone()];
    c.put_record_batch()
        .delivery_stream_name("whole")
        .set_records(Some(recs.iter().map(|r| record(r.as_bytes())).collect()))
        .send()
        .await
        .unwrap();
    wait_until(
        "the partition and the error output",
        Duration::from_secs(30),
        || objects(&bucket).len() >= 2,
    )
    .await;
    let all = objects(&bucket);
    let parts: Vec<&(String, Vec<u8>)> = all.iter().filter(|(k, _)| k.starts_with("k=")).collect();
    assert_eq!(parts.len(), 1, "{all:?}");
    assert!(parts[0].0.starts_with("k=a/"), "{}", parts[0].0);
    assert_eq!(parts[0].1, format!("{}\n", recs[0]).into_bytes());
    let errs = error_docs(&all, "errors/partitioning-failed/");
    assert_eq!(errs.len(), 1, "{all:?}");
    assert_eq!(
        errs[0]["errorCode"],
        "DynamicPartitioning.MetadataExtractionFailed"
    );
    let msg = errs[0]["errorMessage"].as_str().unwrap();
    assert!(msg.contains("more than 50 keys"), "{msg}");
    assert_eq!(raw(&errs[0]), wide.into_bytes());
}

#[tokio::test]
async fn records_past_the_active_partition_limit_go_to_the_error_output() {
    // AWS's quota is 500 (raised on request); the server's knob stands for
    // the quota, so a small one keeps the test small.
    let srv = TestServer::start_with(&["--firehose-active-partition-limit", "3"]);
    let bucket = bucket_dir(&srv, "limited");
    let c = firehose(&srv.url());
    c.create_delivery_stream()
        .delivery_stream_name("many")
        .extended_s3_destination_configuration(
            partitioned("limited", "k=!{partitionKeyFromQuery:k}/")
                .processing_configuration(processing(vec![jq("{k: .k}")]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let recs: Vec<String> = (0..5).map(|i| format!(r#"{{"k":{i}}}"#)).collect();
    c.put_record_batch()
        .delivery_stream_name("many")
        .set_records(Some(recs.iter().map(|r| record(r.as_bytes())).collect()))
        .send()
        .await
        .unwrap();
    wait_until(
        "three partitions and the error output",
        Duration::from_secs(30),
        || objects(&bucket).len() >= 4,
    )
    .await;
    let all = objects(&bucket);
    let parts: Vec<&String> = all
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("k="))
        .collect();
    assert_eq!(parts.len(), 3, "{parts:?}");
    for i in 0..3 {
        assert!(parts.iter().any(|k| k.starts_with(&format!("k={i}/"))));
    }
    let errs = error_docs(&all, "errors/partitioning-failed/");
    assert_eq!(errs.len(), 2, "{all:?}");
    for e in &errs {
        assert_eq!(
            e["errorCode"],
            "DynamicPartitioning.ActivePartitionExceeded"
        );
    }
    let mut raws: Vec<Vec<u8>> = errs.iter().map(raw).collect();
    raws.sort();
    assert_eq!(
        raws,
        vec![recs[3].as_bytes().to_vec(), recs[4].as_bytes().to_vec()]
    );
    // An out-of-range knob is refused at start.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ripstream"))
        .args([
            "serve",
            "--firehose-active-partition-limit",
            "0",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn cloudwatch_logs_subscription_data_is_inflated_and_extracted() {
    let srv = TestServer::start();
    let bucket = bucket_dir(&srv, "cwl");
    let c = firehose(&srv.url());
    // Without Decompression, CloudWatchLogProcessing is refused.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nodecomp")
        .extended_s3_destination_configuration(
            crate::firehose::extended("cwl", 1)
                .processing_configuration(processing(vec![processor(
                    T::CloudWatchLogProcessing,
                    &[(N::DataMessageExtraction, "true")],
                )]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Listed in another order than AWS applies them.
    c.create_delivery_stream()
        .delivery_stream_name("logs")
        .extended_s3_destination_configuration(
            crate::firehose::extended("cwl", 1)
                .prefix("logs/")
                .error_output_prefix("errors/")
                .processing_configuration(processing(vec![
                    processor(T::AppendDelimiterToRecord, &[]),
                    processor(
                        T::CloudWatchLogProcessing,
                        &[(N::DataMessageExtraction, "true")],
                    ),
                    processor(T::Decompression, &[(N::CompressionFormat, "GZIP")]),
                ]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let data = |events: &[&str]| {
        let evs: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_700_000_000_000i64 + i as i64, "message": m}))
            .collect();
        gz(serde_json::to_string(&serde_json::json!({
            "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/app",
            "logStream": "i-1", "subscriptionFilters": ["all"], "logEvents": evs}))
        .unwrap()
        .as_bytes())
    };
    let control = gz(br#"{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1700000000000,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}"#);
    let batch = [
        data(&["GET /a 200", "GET /b 404"]),
        control,
        b"not gzip".to_vec(),
        data(&["POST /c 201"]),
    ];
    c.put_record_batch()
        .delivery_stream_name("logs")
        .set_records(Some(batch.iter().map(|r| record(r)).collect()))
        .send()
        .await
        .unwrap();
    wait_until(
        "the messages and the error output",
        Duration::from_secs(30),
        || objects(&bucket).len() >= 2,
    )
    .await;
    let all = objects(&bucket);
    let logs: String = all
        .iter()
        .filter(|(k, _)| k.starts_with("logs/"))
        .map(|(_, d)| String::from_utf8(d.clone()).unwrap())
        .collect();
    assert_eq!(logs, "GET /a 200\nGET /b 404\nPOST /c 201\n");
    // The record that did not inflate: as it was put, under AWS's type.
    let errs = error_docs(&all, "errors/decompression-failed/");
    assert_eq!(errs.len(), 1, "{all:?}");
    assert_eq!(raw(&errs[0]), b"not gzip");
}

#[tokio::test]
async fn a_custom_time_zone_names_prefixes_and_objects() {
    let srv = TestServer::start();
    let bucket = bucket_dir(&srv, "zones");
    let c = firehose(&srv.url());
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("badzone")
        .extended_s3_destination_configuration(
            crate::firehose::extended("zones", 1)
                .custom_time_zone("Mars/Olympus_Mons")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    c.create_delivery_stream()
        .delivery_stream_name("tokyo")
        .extended_s3_destination_configuration(
            crate::firehose::extended("zones", 1)
                .custom_time_zone("Asia/Tokyo")
                .prefix("d=!{timestamp:yyyy-MM-dd}/h=!{timestamp:HH}/")
                .error_output_prefix("errors/!{firehose:error-output-type}/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    c.create_delivery_stream()
        .delivery_stream_name("newyork")
        .extended_s3_destination_configuration(
            crate::firehose::extended("zones", 1)
                .custom_time_zone("America/New_York")
                .prefix("ny/")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let zone = |z: &str| jiff::tz::TimeZone::get(z).unwrap();
    let before = jiff::Timestamp::now();
    for s in ["tokyo", "newyork"] {
        c.put_record()
            .delivery_stream_name(s)
            .record(record(b"x"))
            .send()
            .await
            .unwrap();
    }
    let after = jiff::Timestamp::now();
    wait_until("both objects", Duration::from_secs(30), || {
        objects(&bucket).len() >= 2
    })
    .await;
    let all = objects(&bucket);
    // The key's times are the zone's, at some instant of the puts.
    let expect = |fmt: &str, z: &str| -> Vec<String> {
        [before, after]
            .iter()
            .map(|t| t.to_zoned(zone(z)).strftime(fmt).to_string())
            .collect()
    };
    let tokyo = &all.iter().find(|(k, _)| k.starts_with("d=")).unwrap().0;
    let want = expect("d=%Y-%m-%d/h=%H/tokyo-1-%Y-%m-%d-%H-", "Asia/Tokyo");
    assert!(
        want.iter().any(|w| tokyo.starts_with(w)),
        "{tokyo} vs {want:?}"
    );
    let ny = &all.iter().find(|(k, _)| k.starts_with("ny/")).unwrap().0;
    let want = expect("ny/%Y/%m/%d/%H/newyork-1-%Y-%m-%d-%H-", "America/New_York");
    assert!(want.iter().any(|w| ny.starts_with(w)), "{ny} vs {want:?}");
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("tokyo")
        .send()
        .await
        .unwrap();
    let ext = d.delivery_stream_description().unwrap().destinations()[0]
        .extended_s3_destination_description()
        .unwrap()
        .clone();
    assert_eq!(ext.custom_time_zone(), Some("Asia/Tokyo"));
}
