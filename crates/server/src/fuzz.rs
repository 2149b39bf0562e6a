//! Property-based fuzzing of every request decoder: the JSON and CBOR codecs
//! with the model validator and the whole service behind them, and the SigV4
//! parser. `fuzz/run.sh` runs these for minutes with many more cases;
//! failures proptest finds are saved under `proptest-regressions/` and
//! replayed first on every run, and `corpus` below pins inputs found by hand.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use crate::model::ServiceModel;

fn model() -> &'static ServiceModel {
    static M: OnceLock<ServiceModel> = OnceLock::new();
    M.get_or_init(ServiceModel::kinesis)
}

/// Member names that occur in Kinesis requests, so generated bodies reach
/// deep into the validator and the service instead of being ignored.
const KEYS: &[&str] = &[
    "StreamName",
    "StreamARN",
    "ShardCount",
    "Records",
    "Data",
    "PartitionKey",
    "ExplicitHashKey",
    "ShardId",
    "ShardIteratorType",
    "StartingSequenceNumber",
    "Timestamp",
    "ShardIterator",
    "Limit",
    "NextToken",
    "MaxResults",
    "ShardFilter",
    "Type",
    "Tags",
    "TagKeys",
    "RetentionPeriodHours",
    "StreamModeDetails",
    "StreamMode",
    "ConsumerARN",
    "ConsumerName",
    "StartingPosition",
    "SequenceNumber",
    "ResourceARN",
    "Policy",
    "KeyId",
    "EncryptionType",
    "TargetShardCount",
    "ScalingType",
    "ShardToSplit",
    "NewStartingHashKey",
    "ShardToMerge",
    "AdjacentShardToMerge",
    "ExclusiveStartShardId",
    "ExclusiveStartStreamName",
    "ShardLevelMetrics",
    "MaxRecordSizeInKiB",
    "WarmThroughputMiBps",
    "DryRun",
    "EnforceConsumerDeletion",
    "MinimumThroughputBillingCommitment",
    "Status",
    "RecordDistributionStrategy",
    "SequenceNumberForOrdering",
    "StreamCreationTimestamp",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9_.:/=+-]{0,20}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("shardId-000000000000".into())),
        Just(Value::String("fuzz".into())),
        Just(Value::String("aGVsbG8=".into())),
        Just(Value::String(
            "340282366920938463463374607431768211456".into()
        )),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn ops() -> Vec<&'static str> {
    vec![
        "CreateStream",
        "DeleteStream",
        "DescribeStream",
        "DescribeStreamSummary",
        "ListStreams",
        "ListShards",
        "PutRecord",
        "PutRecords",
        "GetShardIterator",
        "GetRecords",
        "IncreaseStreamRetentionPeriod",
        "DecreaseStreamRetentionPeriod",
        "UpdateMaxRecordSize",
        "UpdateStreamMode",
        "EnableEnhancedMonitoring",
        "DisableEnhancedMonitoring",
        "DescribeLimits",
        "AddTagsToStream",
        "RemoveTagsFromStream",
        "ListTagsForStream",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
        "SplitShard",
        "MergeShards",
        "UpdateShardCount",
        "RegisterStreamConsumer",
        "DescribeStreamConsumer",
        "ListStreamConsumers",
        "DeregisterStreamConsumer",
        "PutResourcePolicy",
        "GetResourcePolicy",
        "DeleteResourcePolicy",
        "StartStreamEncryption",
        "StopStreamEncryption",
        "UpdateStreamWarmThroughput",
        "UpdateStreamRecordDistributionStrategy",
        "DescribeAccountSettings",
        "UpdateAccountSettings",
    ]
}

/// A real service over a scratch directory, shared by the cases of one run.
fn service() -> &'static (
    tokio::runtime::Runtime,
    ripstream_kinesis::Service,
    tempfile::TempDir,
) {
    static S: OnceLock<(
        tokio::runtime::Runtime,
        ripstream_kinesis::Service,
        tempfile::TempDir,
    )> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ripstream_kinesis::ServiceConfig::new(dir.path());
        cfg.fsync = ripstream_kinesis::FsyncPolicy::Never;
        cfg.quotas = ripstream_kinesis::quota::QuotaMode::Off;
        let svc = rt.block_on(ripstream_kinesis::Service::open(cfg)).unwrap();
        rt.block_on(
            svc.create_stream(ripstream_kinesis::types::CreateStreamInput {
                stream_name: "fuzz".into(),
                shard_count: Some(2),
                ..Default::default()
            }),
        )
        .unwrap();
        (rt, svc, dir)
    })
}

/// Runs one request body through validation and, if it passes, the service.
fn run(op: &str, mut body: Value) {
    let m = model();
    if m.validate(op, &mut body).is_err() {
        return;
    }
    let (rt, svc, _) = service();
    if op == "SubscribeToShard" {
        return;
    }
    m.retain_defined_members(op, &mut body);
    static API: OnceLock<ripstream_kinesis::api::KinesisApi> = OnceLock::new();
    let api = API.get_or_init(|| ripstream_kinesis::api::KinesisApi::new(svc.clone()));
    let request = ripstream_api::Request {
        operation: op,
        input: body,
        authorize: &ripstream_api::AllowAll,
        caller: ripstream_api::Caller::Anonymous,
        slot: None,
        body: None,
    };
    let _ = rt.block_on(ripstream_api::Service::call(api, request));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    #[test]
    fn json_requests_never_panic(op in prop::sample::select(ops()), body in json()) {
        run(op, body);
    }

    #[test]
    fn cbor_bodies_never_panic(op in prop::sample::select(ops()), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = ciborium::from_reader::<ciborium::Value, _>(&bytes[..]) {
            let json = model().cbor_to_json(model().input_shape(op), v);
            run(op, json);
        }
    }

    #[test]
    fn json_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            run("PutRecords", v);
        }
    }

    #[test]
    fn cbor_prescan_counts_what_the_decoder_builds(v in cbor_value()) {
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let n = cbor_items(&v);
        prop_assert!(crate::model::cbor_items_within(&bytes, n));
        prop_assert!(!crate::model::cbor_items_within(&bytes, n - 1));
    }

    #[test]
    fn cbor_prescan_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), limit in 0usize..64) {
        // A larger budget never refuses what a smaller one admits.
        if crate::model::cbor_items_within(&bytes, limit) {
            prop_assert!(crate::model::cbor_items_within(&bytes, limit + 1));
        }
        let _ = model().decode_cbor(Some("PutRecords"), &bytes);
    }

    #[test]
    fn front_door_helpers_never_panic(host in ".{0,40}", auth in ".{0,120}", secret in "[0-9a-f]{16}") {
        let _ = crate::guard::is_loopback_host(&host);
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = format!("AWS4-HMAC-SHA256 {auth} Signature={secret}").parse() {
            headers.insert("authorization", v);
        }
        let _ = crate::redact::access_key_id(&headers, Some(&auth));
        let _ = crate::guard::metrics_access(false, Some("t"), &headers);
        // Whatever the header holds, its signature never reaches the log line.
        let message = format!("Authorization header requires 'Credential' parameter. Authorization={auth} Signature={secret}");
        prop_assert!(!crate::redact::message_for_log(&message).contains(&secret));
    }

    #[test]
    fn sigv4_headers_never_panic(auth in ".{0,200}", query in ".{0,200}", date in ".{0,20}") {
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = auth.parse() {
            headers.insert("authorization", v);
        }
        if let Ok(v) = date.parse() {
            headers.insert("x-amz-date", v);
        }
        struct AnyKey;
        impl crate::auth::sigv4::SecretLookup for AnyKey {
            fn secret(&self, _: &str) -> Option<&str> {
                Some("secret")
            }
        }
        let parts = crate::auth::sigv4::RequestParts { method: "POST", path: "/", query: &query, host: Some("h"), headers: &headers, body: b"{}" };
        let _ = crate::auth::sigv4::verify(&parts, &AnyKey, "us-east-1", "kinesis", 1_800_000_000);
    }
}

fn cbor_value() -> impl Strategy<Value = ciborium::Value> {
    use ciborium::Value as C;
    let leaf = prop_oneof![
        Just(C::Null),
        any::<bool>().prop_map(C::Bool),
        any::<i64>().prop_map(|i| C::Integer(i.into())),
        any::<f64>().prop_map(C::Float),
        ".{0,30}".prop_map(C::Text),
        proptest::collection::vec(any::<u8>(), 0..30).prop_map(C::Bytes),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(C::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..8).prop_map(C::Map),
            (0u64..100, inner).prop_map(|(t, v)| C::Tag(t, Box::new(v))),
        ]
    })
}

/// Data items of a CBOR value, as its encoding has headers.
fn cbor_items(v: &ciborium::Value) -> usize {
    use ciborium::Value as C;
    match v {
        C::Array(a) => 1 + a.iter().map(cbor_items).sum::<usize>(),
        C::Map(m) => {
            1 + m
                .iter()
                .map(|(k, v)| cbor_items(k) + cbor_items(v))
                .sum::<usize>()
        }
        C::Tag(_, inner) => 1 + cbor_items(inner),
        _ => 1,
    }
}

/// The hostile bodies of the front door's memory limits stay small: a CBOR
/// body of millions of one-byte items is refused before any value is built,
/// and millions of broken entries yield ten messages of bounded length.
#[test]
fn hostile_bodies_are_refused_cheaply() {
    let mut cbor = vec![0xa1, 0x67];
    cbor.extend_from_slice(b"Records");
    cbor.push(0x9a);
    cbor.extend_from_slice(&4_000_000u32.to_be_bytes());
    cbor.resize(cbor.len() + 4_000_000, 0xa0);
    assert!(model().decode_cbor(Some("PutRecords"), &cbor).is_none());
    // The same request at its limit is decoded.
    let mut ok = vec![0xa1, 0x67];
    ok.extend_from_slice(b"Records");
    ok.extend_from_slice(&[0x99, 0x01, 0xf4]);
    ok.resize(ok.len() + 500, 0xa0);
    assert!(model().decode_cbor(Some("PutRecords"), &ok).is_some());

    let records: Vec<Value> = (0..200_000).map(|_| serde_json::json!({})).collect();
    let mut body = serde_json::json!({"StreamName": "fuzz", "Records": records});
    let e = model().validate("PutRecords", &mut body).unwrap_err();
    assert!(e.message.starts_with("10 validation errors detected"));
    assert!(e.message.len() < 100 * 1024, "{} bytes", e.message.len());
}

/// Inputs that once needed care, replayed on every run.
#[test]
fn corpus() {
    let nested = (0..2000).fold(Value::Null, |v, _| Value::Array(vec![v]));
    let cases: Vec<(&str, Value)> = vec![
        (
            "PutRecords",
            serde_json::json!({"StreamName": "fuzz", "Records": [{"Data": "", "PartitionKey": "\u{10ffff}"}]}),
        ),
        (
            "PutRecord",
            serde_json::json!({"StreamName": "fuzz", "Data": "aGk=", "PartitionKey": "k", "ExplicitHashKey": "0"}),
        ),
        (
            "PutRecord",
            serde_json::json!({"StreamName": "fuzz", "Data": "aGk=", "PartitionKey": "k", "SequenceNumberForOrdering": "9".repeat(129)}),
        ),
        (
            "GetShardIterator",
            serde_json::json!({"StreamName": "fuzz", "ShardId": "shardId-4294967296", "ShardIteratorType": "LATEST"}),
        ),
        (
            "GetShardIterator",
            serde_json::json!({"StreamName": "fuzz", "ShardId": "0", "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": "4".repeat(56)}),
        ),
        (
            "GetShardIterator",
            serde_json::json!({"StreamName": "fuzz", "ShardId": "0", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": -1e300}),
        ),
        (
            "GetRecords",
            serde_json::json!({"ShardIterator": "A".repeat(512)}),
        ),
        ("ListShards", serde_json::json!({"NextToken": "e30="})),
        (
            "ListShards",
            serde_json::json!({"StreamName": "fuzz", "ShardFilter": {"Type": "AT_TIMESTAMP", "Timestamp": 1e15}}),
        ),
        (
            "SplitShard",
            serde_json::json!({"StreamName": "fuzz", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "1"}),
        ),
        (
            "UpdateShardCount",
            serde_json::json!({"StreamName": "fuzz", "TargetShardCount": 2147483647, "ScalingType": "UNIFORM_SCALING"}),
        ),
        (
            "CreateStream",
            serde_json::json!({"StreamName": "x", "ShardCount": 9.9e18}),
        ),
        (
            "PutResourcePolicy",
            serde_json::json!({"ResourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/fuzz", "Policy": "{\"Statement\": [[[[]]]]}"}),
        ),
        (
            "DescribeStreamConsumer",
            serde_json::json!({"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/fuzz/consumer/a:99999999999999999999"}),
        ),
        ("ListStreams", nested),
    ];
    for (op, body) in cases {
        run(op, body);
    }
}

/// The generator is only useful if many bodies pass validation and reach
/// the service; this keeps it honest.
#[test]
fn generated_bodies_reach_the_service() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (prop::sample::select(ops()), json());
    let mut valid = 0;
    for _ in 0..2000 {
        let (op, mut body) = strategy.new_tree(&mut runner).unwrap().current();
        if model().validate(op, &mut body).is_ok() {
            valid += 1;
        }
    }
    assert!(
        valid > 100,
        "only {valid} of 2000 generated bodies pass validation"
    );
}
