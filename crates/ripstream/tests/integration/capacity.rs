//! On-demand scaling, warm throughput, record distribution, account settings, DryRun.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    MinimumThroughputBillingCommitmentInput, MinimumThroughputBillingCommitmentInputStatus,
    MinimumThroughputBillingCommitmentOutputStatus, PutRecordsRequestEntry,
    RecordDistributionStrategy, StreamMode, StreamModeDetails,
};

use crate::reshard::{assert_tiling, open, read_lineage_ordered, shards};
use crate::support::*;

fn on_demand() -> StreamModeDetails {
    StreamModeDetails::builder()
        .stream_mode(StreamMode::OnDemand)
        .build()
        .unwrap()
}

/// 2^126: the end of the first of four even shards.
const QUARTER: u128 = 1 << 126;

fn hot_entry(key: usize, n: u64) -> (String, PutRecordsRequestEntry) {
    // 64 keys spread evenly over the first quarter of the key space.
    let hash = QUARTER / 64 * key as u128 + 12_345;
    let data = format!("{key}-{n}");
    (
        format!("key-{key}"),
        PutRecordsRequestEntry::builder()
            .partition_key(format!("key-{key}"))
            .explicit_hash_key(hash.to_string())
            .data(Blob::new(data))
            .build()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_stream_splits_its_hot_range_and_stops_throttling() {
    let srv = TestServer::start_with(&["--on-demand-scale-interval-ms", "300"]);
    let c = srv.client();
    c.create_stream()
        .stream_name("hot")
        .stream_mode_details(on_demand())
        .send()
        .await
        .unwrap();
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut n = 0u64;
    let put = |batch: Vec<(String, PutRecordsRequestEntry)>| {
        let c = c.clone();
        async move {
            let (keys, entries): (Vec<String>, Vec<PutRecordsRequestEntry>) =
                batch.into_iter().unzip();
            let out = c
                .put_records()
                .stream_name("hot")
                .set_records(Some(entries.clone()))
                .send()
                .await
                .unwrap();
            let mut ok = Vec::new();
            for ((k, e), r) in keys.into_iter().zip(entries).zip(out.records()) {
                if r.error_code().is_none() {
                    ok.push((k, String::from_utf8(e.data().as_ref().to_vec()).unwrap()));
                }
            }
            (ok, out.failed_record_count().unwrap_or(0))
        }
    };
    // Phase 1: ~3000 records/s into one shard's range, until the scaler has
    // spread it over at least four shards.
    let started = Instant::now();
    let mut throttled_early = 0;
    loop {
        let batch: Vec<_> = (0..500)
            .map(|i| {
                n += 1;
                hot_entry(i % 64, n)
            })
            .collect();
        let (ok, failed) = put(batch).await;
        throttled_early += failed;
        for (k, d) in ok {
            acked.entry(k).or_default().push(d);
        }
        let all = shards(&c, "hot").await;
        let covering = open(&all)
            .iter()
            .filter(|s| {
                s.hash_key_range()
                    .unwrap()
                    .starting_hash_key()
                    .parse::<u128>()
                    .unwrap()
                    < QUARTER
            })
            .count();
        if covering >= 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hot range was not split in time ({covering} shards)"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        throttled_early > 0,
        "the workload should have been throttled before scaling"
    );
    // Phase 2: the same keys at 1500 records/s are no longer throttled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..6 {
        let batch: Vec<_> = (0..250)
            .map(|i| {
                n += 1;
                hot_entry(i % 64, n)
            })
            .collect();
        let (ok, failed) = put(batch).await;
        assert_eq!(failed, 0, "throttled after scaling");
        for (k, d) in ok {
            acked.entry(k).or_default().push(d);
        }
        tokio::time::sleep(Duration::from_millis(170)).await;
    }
    let all = shards(&c, "hot").await;
    assert_tiling(&all);
    // Splits were made where the traffic is: the cold three quarters kept their shards.
    assert!(open(&all).len() >= 7);
    let read = read_lineage_ordered(&c, "hot").await;
    for (k, values) in &acked {
        assert_eq!(read.get(k), Some(values), "records of {k}");
    }
}

#[tokio::test]
async fn warm_throughput_needs_the_account_commitment() {
    let srv = TestServer::start();
    let c = srv.client();
    c.create_stream()
        .stream_name("w")
        .stream_mode_details(on_demand())
        .send()
        .await
        .unwrap();
    create_stream(&c, "prov", 1).await;
    let e = c
        .update_stream_warm_throughput()
        .stream_name("w")
        .warm_throughput_mibps(8)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let s = c.describe_account_settings().send().await.unwrap();
    assert_eq!(
        s.minimum_throughput_billing_commitment().unwrap().status(),
        &MinimumThroughputBillingCommitmentOutputStatus::Disabled
    );

    let commit = |status| {
        MinimumThroughputBillingCommitmentInput::builder()
            .status(status)
            .build()
            .unwrap()
    };
    let on = c
        .update_account_settings()
        .minimum_throughput_billing_commitment(commit(
            MinimumThroughputBillingCommitmentInputStatus::Enabled,
        ))
        .send()
        .await
        .unwrap();
    let on = on.minimum_throughput_billing_commitment().unwrap();
    assert_eq!(
        on.status(),
        &MinimumThroughputBillingCommitmentOutputStatus::Enabled
    );
    let started = on.started_at().unwrap().secs();
    assert_eq!(
        on.earliest_allowed_end_at().unwrap().secs() - started,
        24 * 3600
    );

    let out = c
        .update_stream_warm_throughput()
        .stream_name("w")
        .warm_throughput_mibps(8)
        .send()
        .await
        .unwrap();
    assert_eq!(out.warm_throughput().unwrap().target_mibps(), Some(8));
    assert_eq!(out.warm_throughput().unwrap().current_mibps(), Some(8));
    let all = shards(&c, "w").await;
    assert_eq!(open(&all).len(), 8);
    assert_tiling(&all);
    let s = c
        .describe_stream_summary()
        .stream_name("w")
        .send()
        .await
        .unwrap();
    let s = s.stream_description_summary().unwrap();
    assert_eq!(s.warm_throughput().unwrap().target_mibps(), Some(8));
    assert_eq!(s.open_shard_count(), 8);
    // Eight shards take eight times a shard's writes without throttling.
    let entries: Vec<PutRecordsRequestEntry> = (0..500)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("p{i}"))
                .data(Blob::new(vec![0u8; 8 * 1024]))
                .build()
                .unwrap()
        })
        .collect();
    let out = c
        .put_records()
        .stream_name("w")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));

    let e = c
        .update_stream_warm_throughput()
        .stream_name("prov")
        .warm_throughput_mibps(2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let off = c
        .update_account_settings()
        .minimum_throughput_billing_commitment(commit(
            MinimumThroughputBillingCommitmentInputStatus::Disabled,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        off.minimum_throughput_billing_commitment()
            .unwrap()
            .status(),
        &MinimumThroughputBillingCommitmentOutputStatus::EnabledUntilEarliestAllowedEnd
    );
}

#[tokio::test]
async fn auto_distribution_ignores_partition_keys() {
    let srv = TestServer::start();
    let c = srv.client();
    c.create_stream()
        .stream_name("auto")
        .stream_mode_details(on_demand())
        .send()
        .await
        .unwrap();
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/auto";
    let e = c
        .put_record()
        .stream_name("auto")
        .data(Blob::new("no key"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    c.update_stream_record_distribution_strategy()
        .stream_arn(arn)
        .record_distribution_strategy(RecordDistributionStrategy::Auto)
        .send()
        .await
        .unwrap();
    let s = c
        .describe_stream_summary()
        .stream_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.stream_description_summary()
            .unwrap()
            .record_distribution_strategy(),
        Some(&RecordDistributionStrategy::Auto)
    );
    let entries: Vec<PutRecordsRequestEntry> = (0..400)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key("same")
                .data(Blob::new(format!("{i}")))
                .build()
                .unwrap()
        })
        .collect();
    let out = c
        .put_records()
        .stream_name("auto")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    let mut per_shard: HashMap<&str, usize> = HashMap::new();
    for r in out.records() {
        *per_shard.entry(r.shard_id().unwrap()).or_default() += 1;
    }
    assert_eq!(per_shard.len(), 4);
    assert!(per_shard.values().all(|n| *n == 100), "{per_shard:?}");
    c.put_record()
        .stream_name("auto")
        .data(Blob::new("keyless"))
        .send()
        .await
        .unwrap();

    create_stream(&c, "prov", 1).await;
    let e = c
        .update_stream_record_distribution_strategy()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/prov")
        .record_distribution_strategy(RecordDistributionStrategy::Auto)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
}

#[tokio::test]
async fn dry_run_checks_without_writing() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "dry", 1).await;
    let r = api(
        &srv.addr,
        "PutRecord",
        r#"{"StreamName": "dry", "PartitionKey": "k", "Data": "aGk=", "DryRun": true}"#,
    )
    .await;
    assert_eq!(r.json()["__type"], "DryRunOperationException");
    let r = api(
        &srv.addr,
        "PutRecord",
        r#"{"StreamName": "nope", "PartitionKey": "k", "Data": "aGk=", "DryRun": true}"#,
    )
    .await;
    assert_eq!(r.json()["__type"], "ResourceNotFoundException");
    assert!(
        read_shard(&c, "dry", "shardId-000000000000")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn cold_on_demand_shards_merge_back_to_the_floor() {
    let srv = TestServer::start_with(&[
        "--on-demand-scale-interval-ms",
        "200",
        "--on-demand-merge-after-secs",
        "0",
    ]);
    let c = srv.client();
    create_stream(&c, "cold", 7).await;
    c.put_record()
        .stream_name("cold")
        .partition_key("k")
        .data(Blob::new("kept"))
        .send()
        .await
        .unwrap();
    c.update_stream_mode()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/cold")
        .stream_mode_details(on_demand())
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = shards(&c, "cold").await;
        assert_tiling(&all);
        let n = open(&all).len();
        assert!(n >= 4, "merged below the floor: {n}");
        if n == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "still {n} shards");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = read_lineage_ordered(&c, "cold").await;
    assert_eq!(read["k"], ["kept"]);
}
